#include <stdio.h>

#include "calc.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s EXPRESSION\n", argv[0]);
        return 2;
    }
    double result;
    CalcStatus status = calc_eval(argv[1], &result);
    if (status != CALC_OK) {
        fprintf(stderr, "error %d\n", (int)status);
        return 1;
    }
    printf("%g\n", result);
    return 0;
}
