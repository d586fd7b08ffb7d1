/* Minimal test harness: RUN(test) runs one test function; CHECK records failures. */
#ifndef CHECK_H
#define CHECK_H

#include <stdio.h>

static int check_tests_run, check_tests_failed, check_current_failed;

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            printf("  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);       \
            check_current_failed = 1;                                      \
        }                                                                  \
    } while (0)

#define RUN(test)                                                          \
    do {                                                                   \
        check_current_failed = 0;                                          \
        test();                                                            \
        check_tests_run++;                                                 \
        if (check_current_failed) {                                        \
            check_tests_failed++;                                          \
            printf("FAILED %s\n", #test);                                  \
        } else {                                                           \
            printf("ok %s\n", #test);                                      \
        }                                                                  \
    } while (0)

#define CHECK_SUMMARY()                                                    \
    (printf("%d passed, %d failed\nTESTS RAN: %d\n",                      \
            check_tests_run - check_tests_failed, check_tests_failed,      \
            check_tests_run),                                              \
     check_tests_failed == 0 ? 0 : 1)

#endif
