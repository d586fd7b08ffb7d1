#ifndef CALC_H
#define CALC_H

#define CALC_MAX_TOKENS 64
#define CALC_STACK_SIZE 32

typedef enum { TOK_NUM, TOK_OP, TOK_LPAREN, TOK_RPAREN } TokenKind;

typedef struct {
    TokenKind kind;
    double value; /* TOK_NUM */
    char op;      /* TOK_OP: + - * / % ^ and 'n' for unary minus */
} Token;

typedef struct {
    double items[CALC_STACK_SIZE];
    int size;
} Stack;

typedef enum {
    CALC_OK = 0,
    CALC_ERR_SYNTAX,
    CALC_ERR_PARENS,
    CALC_ERR_DIV_ZERO,
    CALC_ERR_OVERFLOW
} CalcStatus;

void stack_init(Stack *s);
int stack_push(Stack *s, double v); /* 0 on success, -1 when full */
int stack_pop(Stack *s, double *v); /* 0 on success, -1 when empty */

/* Tokenize src into out (at most max tokens); returns the count or -1 on a bad character. */
int calc_lex(const char *src, Token *out, int max);
/* Shunting-yard: infix tokens to RPN; returns the RPN length or -1 (mismatched parens). */
int calc_to_rpn(const Token *in, int n, Token *out);
/* Evaluate RPN tokens. */
CalcStatus calc_eval_rpn(const Token *rpn, int n, double *result);
/* Lex, parse and evaluate an infix expression. */
CalcStatus calc_eval(const char *expr, double *result);
int calc_precedence(char op);

#endif
