#include <math.h>

#include "calc.h"
#include "check.h"

static int near(double a, double b) {
    return fabs(a - b) < 1e-9;
}

static double ev(const char *expr) {
    double r = NAN;
    if (calc_eval(expr, &r) != CALC_OK) {
        return NAN;
    }
    return r;
}

static void test_stack(void) {
    Stack s;
    double v = 0;
    stack_init(&s);
    CHECK(stack_pop(&s, &v) == -1);
    for (int i = 0; i < CALC_STACK_SIZE; i++) {
        CHECK(stack_push(&s, i) == 0);
    }
    CHECK(stack_push(&s, 99) == -1);
    CHECK(stack_pop(&s, &v) == 0 && v == CALC_STACK_SIZE - 1);
    CHECK(s.size == CALC_STACK_SIZE - 1);
}

static void test_lex(void) {
    Token t[CALC_MAX_TOKENS];
    CHECK(calc_lex("12.5 + (3)", t, CALC_MAX_TOKENS) == 5);
    CHECK(t[0].kind == TOK_NUM && near(t[0].value, 12.5));
    CHECK(t[1].kind == TOK_OP && t[1].op == '+');
    CHECK(t[2].kind == TOK_LPAREN && t[4].kind == TOK_RPAREN);
    CHECK(calc_lex("-2 - -3", t, CALC_MAX_TOKENS) == 5);
    CHECK(t[0].op == 'n' && t[2].op == '-' && t[3].op == 'n');
    CHECK(calc_lex("2 $ 3", t, CALC_MAX_TOKENS) == -1);
}

static void test_precedence(void) {
    CHECK(near(ev("1 + 2 * 3"), 7));
    CHECK(near(ev("(1 + 2) * 3"), 9));
    CHECK(near(ev("10 - 4 - 3"), 3));
    CHECK(near(ev("2 ^ 3 ^ 2"), 512));
    CHECK(near(ev("-2 ^ 2"), -4));
    CHECK(near(ev("100 / 10 / 5"), 2));
}

static void test_operators(void) {
    CHECK(near(ev("7 % 4"), 3));
    CHECK(near(ev("2.5 * 4"), 10));
    CHECK(near(ev("-(3 - 5)"), 2));
    CHECK(near(ev("8 / 4 + 1"), 3));
}

static void test_errors(void) {
    double r;
    CHECK(calc_eval("1 / 0", &r) == CALC_ERR_DIV_ZERO);
    CHECK(calc_eval("5 % 0", &r) == CALC_ERR_DIV_ZERO);
    CHECK(calc_eval("(1 + 2", &r) == CALC_ERR_PARENS);
    CHECK(calc_eval("1 + 2)", &r) == CALC_ERR_PARENS);
    CHECK(calc_eval("1 +", &r) == CALC_ERR_SYNTAX);
    CHECK(calc_eval("1 2", &r) == CALC_ERR_SYNTAX);
}

int main(void) {
    RUN(test_stack);
    RUN(test_lex);
    RUN(test_precedence);
    RUN(test_operators);
    RUN(test_errors);
    return CHECK_SUMMARY();
}
