"""The real-world task corpus: upstream projects fetched by exact version and hash, unpacked
into content-addressed snapshots, broken procedurally, validated in the sandbox, and stored as
a JSONL manifest of patches and hashes (never source). See docs/corpus.md.

Modules: sources (registries, hash pinning), snapshots (the cache of source trees), patches
(git-format diffs), python_breakages (AST-located breakages), c_breakages (C/C++ source and
Makefile/CMake breakages), js_breakages (JavaScript source and package.json breakages), drift
(dependency-drift and missing-version pins), npm and npm_locks (the pinned test runners of npm
projects), mirror (the Python dependency mirror), manifest (records, corpus version,
materialisation into envs.task.Task), projects (the pinned project list), build (the
pipeline), build_options (its command-line options).
"""
