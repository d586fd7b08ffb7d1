"""The set-up every run command shares (`sft`, `grpo`, `eval`, the demo), decided once.

Why one module: each command used to wire its own copy of these steps, and the copies drifted
apart (eval built its farm with episode caps and without the validation cache, GRPO with caps
only in the full pipeline; eval looked for an orbax run's own tokenizer, training did not).

- tokenizer: `tokenizer.spec`; else the tokenizer saved with an orbax model source (the one its
  weights were trained with); else the Hugging Face checkpoint's own; else "tiny".
- model source: `train.init_from`, else `model.hf_dir` (a Hugging Face directory or an orbax
  run / checkpoint directory), else a random init of `model.preset` with `train.seed`.
- training start: a good checkpoint of the run is resumed (`train.resume`), otherwise the
  source's weights are loaded in `model.param_dtype`; the tokenizer is saved beside the
  checkpoints either way.
- farm: the `[envs]` section with its episode caps always on (only the full pipeline has caps
  to apply) and the validation cache in the run directory, when that is a file system path.
- corpus: `envs.corpus`, else the bundled one.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
from etils import epath
from jax.sharding import Mesh

from jaxrepair.config import EnvsConfig, RunConfig
from jaxrepair.envs.farm_scheduler import FarmScheduler
from jaxrepair.envs.protocol import IdleFarm
from jaxrepair.envs.task import Task
from jaxrepair.envs.tokenizer import Tokenizer
from jaxrepair.model.config import Qwen3Config
from jaxrepair.model.qwen3 import Params
from jaxrepair.train.rundir import RunDir
from jaxrepair.train.trainer import LossFn, Resumable, Trainer

log = logging.getLogger(__name__)

VALIDATION_CACHE = "validation_cache"


# ----------------------------------------------------------------------------- corpus
def corpus_path(envs: EnvsConfig) -> str:
    """The task corpus a run uses: `envs.corpus`, else the bundled one."""
    from jaxrepair.collect import bundled_corpus

    return envs.corpus or str(bundled_corpus())


def corpus_tasks(envs: EnvsConfig, split: str | None = None) -> list[Task]:
    """The corpus's tasks, or only those of `split` (an error when it has none)."""
    from jaxrepair.envs import load_tasks

    corpus = corpus_path(envs)
    tasks = load_tasks(corpus)
    if split is None:
        return tasks
    chosen = [t for t in tasks if t.split == split]
    if not chosen:
        raise ValueError(f"no {split}-split tasks in {corpus}")
    return chosen


# ----------------------------------------------------------------------------- tokenizer
def _is_hf_dir(src: str) -> bool:
    return "://" not in src and (Path(src) / "config.json").is_file()


def tokenizer_spec(config: RunConfig) -> str:
    """What `load_tokenizer` loads for this run (see the module docstring for the order)."""
    from jaxrepair.train.checkpoint import TOKENIZER_SUBDIR, find_checkpoint_dir

    src = config.train.init_from or config.model.hf_dir
    if config.tokenizer.spec is None and src is not None and not _is_hf_dir(src):
        saved = find_checkpoint_dir(src) / TOKENIZER_SUBDIR
        if saved.is_dir():
            return str(saved)
    return config.tokenizer_spec


def resolve_tokenizer(config: RunConfig, given: str | Tokenizer | None = None) -> Tokenizer:
    """`given` (a spec or a loaded tokenizer) when set, else the run's (`tokenizer_spec`)."""
    from jaxrepair.envs.tokenizer import load_tokenizer

    return load_tokenizer(given if given is not None else tokenizer_spec(config))


# ----------------------------------------------------------------------------- model
@dataclasses.dataclass(frozen=True)
class ModelSource:
    """The model a run starts from: its config (with the run's execution settings) and where
    its weights come from: a Hugging Face directory, an orbax checkpoint directory, or neither
    (a random init)."""

    cfg: Qwen3Config
    hf_dir: str | None = None
    orbax_dir: str | None = None

    @property
    def kind(self) -> str:
        return "hf" if self.hf_dir else "orbax" if self.orbax_dir else "random"

    @property
    def path(self) -> str | None:
        return self.hf_dir or self.orbax_dir

    def load(self, mesh: Mesh, dtype: jnp.dtype, seed: int) -> tuple[Params, int | None]:
        """(params on `mesh` in `dtype`, the checkpoint step for orbax, else None); a random
        source draws its params from `seed`."""
        if self.hf_dir is not None:
            from jaxrepair.model import load_hf

            return load_hf(self.hf_dir, mesh=mesh, dtype=dtype)[1], None
        if self.orbax_dir is not None:
            from jaxrepair.train.checkpoint import load_params

            _, params, step = load_params(self.orbax_dir, mesh=mesh, dtype=dtype)
            return params, step
        from jaxrepair.model import init_params

        return init_params(self.cfg, jax.random.key(seed), mesh=mesh, dtype=dtype), None


def resolve_model(config: RunConfig, vocab_needed: int) -> ModelSource:
    """The run's model source (see the module docstring).

    A random init of a preset whose vocabulary is smaller than the tokenizer's is widened (to a
    multiple of 128, with a warning); a pretrained model that is too small is an error.
    """
    from jaxrepair.train.checkpoint import find_checkpoint_dir, load_meta_config

    m = config.model
    exec_fields = dict(
        remat=m.remat,
        attention_impl=m.attention_impl,
        moe_impl=m.moe_impl,
        scan_layers=m.scan_layers,
    )
    init_from = config.train.init_from or m.hf_dir
    if init_from is not None:
        if _is_hf_dir(init_from):
            cfg = Qwen3Config.from_hf_dir(Path(init_from)).replace(**exec_fields)
            source = ModelSource(cfg, hf_dir=str(Path(init_from)))
        else:  # an orbax run or checkpoint directory (local or a storage URI)
            ck = find_checkpoint_dir(init_from)
            source = ModelSource(load_meta_config(ck).replace(**exec_fields), orbax_dir=str(ck))
        if vocab_needed > source.cfg.vocab_size:
            raise ValueError(
                f"tokenizer has {vocab_needed} tokens but the model at {init_from} has "
                f"vocab_size={source.cfg.vocab_size}: use the checkpoint's own tokenizer"
            )
        return source
    cfg = Qwen3Config.preset(m.preset, **exec_fields)
    if vocab_needed > cfg.vocab_size:
        new = -(-vocab_needed // 128) * 128
        log.warning(
            "preset %r has vocab_size=%d < the tokenizer's %d; random init with vocab_size=%d",
            m.preset,
            cfg.vocab_size,
            vocab_needed,
            new,
        )
        cfg = cfg.replace(vocab_size=new)
    return ModelSource(cfg)


def run_mesh(config: RunConfig, given: Mesh | None = None) -> Mesh:
    """`given`, else the mesh of the `[mesh]` section over every device."""
    if given is not None:
        return given
    from jaxrepair.model import make_mesh

    return make_mesh(config.mesh.shape())


# ----------------------------------------------------------------------------- training run
@dataclasses.dataclass(frozen=True)
class TrainingStart:
    """What a training command (`sft`, `grpo`) has once its run directory is decided."""

    run: RunDir
    tokenizer: Tokenizer
    mesh: Mesh

    @functools.cached_property
    def source(self) -> ModelSource:
        """The model source, resolved on first use: after the command's own input checks
        (data, tasks), so a bad input is reported before anything about the model."""
        return resolve_model(self.config, self.tokenizer.vocab_size)

    @property
    def config(self) -> RunConfig:
        """The run's config (train.out_dir is the directory actually used)."""
        return self.run.config

    @property
    def param_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.config.model.param_dtype)

    def trainer(self, loss_fn: LossFn, total_steps: int, progress: bool = False) -> Trainer:
        """The run's Trainer (no params yet: see `restore_or_init`); `total_steps` optimizer
        updates set the learning-rate schedule."""
        from jaxrepair.train.trainer import optimizer_from_config

        config, tr = self.config, self.config.train
        compute = jnp.dtype(config.model.dtype)
        return Trainer(
            self.source.cfg,
            None,
            loss_fn,
            optimizer_from_config(config.optim, max(total_steps, 1)),
            mesh=self.mesh,
            compute_dtype=None if compute == self.param_dtype else compute,
            accum_steps=config.optim.grad_accum,
            out_dir=self.run.path,
            seed=tr.seed,
            checkpoint_every=tr.checkpoint_every,
            checkpoint_keep=tr.checkpoint_keep,
            log_every=tr.log_every,
            progress=progress,
            extra_meta={"kind": self.run.kind},
        )

    def initial_params(self) -> Params:
        """The source's weights in `model.param_dtype` (where the run started)."""
        return self.source.load(self.mesh, self.param_dtype, self.config.train.seed)[0]

    def restore_or_init(
        self, trainer: Trainer, position: Resumable | None, done: Callable[[], int], unit: str
    ) -> bool:
        """Resume the run's newest good checkpoint into `trainer` and `position` (when
        train.resume), else give `trainer` the initial params; then save the run's tokenizer.
        `done()` is where the resumed run stands in `unit`s, warned about when nothing is left
        to train. Returns whether it resumed."""
        from jaxrepair.model.qwen3 import param_shapes
        from jaxrepair.train.checkpoint import save_run_tokenizer

        tr = self.config.train
        abstract = param_shapes(self.source.cfg, self.param_dtype)
        resumed = bool(tr.resume and trainer.restore(position, abstract))
        if not resumed:
            trainer.set_params(self.initial_params())
        elif done() >= tr.steps:
            log.warning(
                "%s is already at %s %d of train.steps=%d: nothing to train (raise train.steps "
                "to continue it)",
                self.run.path,
                unit,
                done(),
                tr.steps,
            )
        save_run_tokenizer(self.run.path, self.tokenizer, self.source.path)
        return resumed


def start_training(
    config: RunConfig,
    kind: str,
    existing: str = "check",
    *,
    tokenizer: str | Tokenizer | None = None,
    mesh: Mesh | None = None,
) -> TrainingStart:
    """Decide the run directory (refusing one that holds another run, see `rundir`; writes
    config.toml), then resolve the tokenizer and the mesh."""
    from jaxrepair.train.rundir import prepare_run_dir

    run = prepare_run_dir(config, kind, existing)
    tok = resolve_tokenizer(run.config, tokenizer)
    return TrainingStart(run, tok, run_mesh(run.config, mesh))


# ----------------------------------------------------------------------------- farm
def validation_cache_dir(run_dir: str | Path | epath.Path) -> str | None:
    """`run_dir/validation_cache`; None for a run on object storage (the cache locks files,
    which needs a file system every worker shares)."""
    from jaxrepair.train.storage import is_uri

    return None if is_uri(run_dir) else str(Path(run_dir) / VALIDATION_CACHE)


def farm_drivers(envs: EnvsConfig) -> int:
    """How many of the job's processes drive a farm (processes 0..n-1; `envs.drivers`)."""
    return envs.farm_drivers(jax.process_count())


def make_farm(envs: EnvsConfig, run_dir: str | Path | epath.Path) -> FarmScheduler | IdleFarm:
    """This process's farm as `[envs]` asks for it (not started), with its episode caps and
    the validation cache of `run_dir` (when envs.cache_validation); an `IdleFarm` on a process
    that drives none (one Ray farm per job is driven by process 0)."""
    from jaxrepair.envs.farm import farm_from_config

    if jax.process_index() >= farm_drivers(envs):
        return IdleFarm()
    return farm_from_config(
        envs,
        episode_caps=True,
        cache_dir=validation_cache_dir(run_dir),
        latency_seed=jax.process_index(),
    )


__all__ = [
    "ModelSource",
    "TrainingStart",
    "corpus_path",
    "corpus_tasks",
    "farm_drivers",
    "make_farm",
    "resolve_model",
    "resolve_tokenizer",
    "run_mesh",
    "start_training",
    "tokenizer_spec",
    "validation_cache_dir",
]
