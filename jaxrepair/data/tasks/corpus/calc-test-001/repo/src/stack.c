#include "calc.h"

void stack_init(Stack *s) {
    s->size = 0;
}

int stack_push(Stack *s, double v) {
    if (s->size >= CALC_STACK_SIZE) {
        return -1;
    }
    s->items[s->size++] = v;
    return 0;
}

int stack_pop(Stack *s, double *v) {
    if (s->size <= 0) {
        return -1;
    }
    *v = s->items[--s->size];
    return 0;
}
