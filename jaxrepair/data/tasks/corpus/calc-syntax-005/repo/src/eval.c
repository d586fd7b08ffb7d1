#include <math.h>

#include "calc.h"

static CalcStatus apply(char op, double a, double b, double *r) {
    switch (op) {
    case '+':
        *r = a + b;
        return CALC_OK;
    case '-':
        *r = a - b;
        return CALC_OK;
    case '*':
        *r = a * b;
        return CALC_OK;
    case '/':
        if (b == 0.0) {
            return CALC_ERR_DIV_ZERO;
        }
        *r = a / b;
        return CALC_OK;
    case '%':
        if (b == 0.0) {
            return CALC_ERR_DIV_ZERO;
        }
        *r = fmod(a, b);
        return CALC_OK;
    case '^':
        *r = pow(a, b);
        return CALC_OK;
    default:
        return CALC_ERR_SYNTAX;
    }
}

CalcStatus calc_eval_rpn(const Token *rpn, int n, double *result) {
    Stack st;
    stack_init(&st);
    for (int i = 0; i < n; i++) {
        double a, b, r;
        if (rpn[i].kind == TOK_NUM) {
            if (stack_push(&st, rpn[i].value) != 0) {
                return CALC_ERR_OVERFLOW;
            }
            continue;
        }
        if (rpn[i].op == 'n') {
            if (stack_pop(&st, &a) != 0) {
                return CALC_ERR_SYNTAX;
            }
            stack_push(&st, -a);
            continue;
        }
        if (stack_pop(&st, &b) != 0 || stack_pop(&st, &a) != 0) {
            return CALC_ERR_SYNTAX;
        }
        CalcStatus status = apply(rpn[i].op, a, b, &r);
        if (status != CALC_OK) {
            return status;
        }
        stack_push(&st, r);
    }
    if (st.size != 1) {
        return CALC_ERR_SYNTAX;
    }
    return stack_pop(&st, result) == 0 ? CALC_OK : CALC_ERR_SYNTAX;
}

CalcStatus calc_eval(const char *expr, double *result) {
    Token tokens[CALC_MAX_TOKENS], rpn[CALC_MAX_TOKENS];
    int n = calc_lex(expr, tokens, CALC_MAX_TOKENS);
    if (n < 0) {
        return CALC_ERR_SYNTAX;
    }
    int m = calc_to_rpn(tokens, n, rpn);
    if (m < 0) {
        return CALC_ERR_PARENS;
    }
    return calc_eval_rpn(rpn, m, result);
}
