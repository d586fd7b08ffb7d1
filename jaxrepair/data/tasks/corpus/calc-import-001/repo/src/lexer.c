#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "calc.h"

static int expects_operand(const Token *out, int n) {
    return n == 0 || out[n - 1].kind == TOK_OP || out[n - 1].kind == TOK_LPAREN;
}

int calc_lex(const char *src, Token *out, int max) {
    int n = 0;
    const char *p = src;
    while (*p != '\0') {
        if (isspace((unsigned char)*p)) {
            p++;
            continue;
        }
        if (n >= max) {
            return -1;
        }
        if (isdigit((unsigned char)*p) || *p == '.') {
            char *end;
            out[n].kind = TOK_NUM;
            out[n].value = strtod(p, &end);
            p = end;
        } else if (*p == '(') {
            out[n].kind = TOK_LPAREN;
            p++;
        } else if (*p == ')') {
            out[n].kind = TOK_RPAREN;
            p++;
        } else if (strchr("+-*/%^", *p) != NULL) {
            out[n].kind = TOK_OP;
            out[n].op = (*p == '-' && expects_operand(out, n)) ? 'n' : *p;
            p++;
        } else {
            return -1;
        }
        n++;
    }
    return n;
}
