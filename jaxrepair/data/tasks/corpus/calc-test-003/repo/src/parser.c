#include "calc.h"

int calc_precedence(char op) {
    switch (op) {
    case '+':
    case '-':
        return 1;
    case '*':
    case '/':
    case '%':
        return 2;
    case 'n':
        return 3;
    case '^':
        return 4;
    default:
        return 0;
    }
}

static int right_assoc(char op) {
    return op == '^' || op == 'n';
}

int calc_to_rpn(const Token *in, int n, Token *out) {
    Token ops[CALC_MAX_TOKENS];
    int nops = 0, nout = 0;
    for (int i = 0; i < n; i++) {
        Token t = in[i];
        if (t.kind == TOK_NUM) {
            out[nout++] = t;
        } else if (t.kind == TOK_OP) {
            while (nops > 0 && ops[nops - 1].kind == TOK_OP) {
                char top = ops[nops - 1].op;
                int pt = calc_precedence(top), pc = calc_precedence(t.op);
                if (pt > pc || (pt == pc && !right_assoc(t.op))) {
                    out[nout++] = ops[--nops];
                } else {
                    break;
                }
            }
            ops[nops++] = t;
        } else if (t.kind == TOK_LPAREN) {
            ops[nops++] = t;
        } else {
            while (nops > 0 && ops[nops - 1].kind != TOK_LPAREN) {
                out[nout++] = ops[--nops];
            }
            if (nops == 0) {
                return -1;
            }
            nops--;
        }
    }
    while (nops > 0) {
        if (ops[nops - 1].kind == TOK_LPAREN) {
            return -1;
        }
        out[nout++] = ops[--nops];
    }
    return nout;
}
