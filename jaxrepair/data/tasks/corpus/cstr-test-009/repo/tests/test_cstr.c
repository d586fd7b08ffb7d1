#include <string.h>

#include "check.h"
#include "cstr.h"

static void test_trim(void) {
    char a[] = "  hello world \t\n";
    CHECK(strcmp(cstr_trim(a), "hello world") == 0);
    char b[] = "   ";
    CHECK(strcmp(cstr_trim(b), "") == 0);
    char c[] = "x";
    CHECK(strcmp(cstr_trim(c), "x") == 0);
}

static void test_starts_with(void) {
    CHECK(cstr_starts_with("makefile", "make") == 1);
    CHECK(cstr_starts_with("make", "makefile") == 0);
    CHECK(cstr_starts_with("abc", "") == 1);
}

static void test_count_char(void) {
    CHECK(cstr_count_char("a,b,,c", ',') == 3);
    CHECK(cstr_count_char("", ',') == 0);
    CHECK(cstr_count_char("aaa", 'a') == 3);
}

static void test_split(void) {
    char out[4][CSTR_MAX_FIELD];
    CHECK(cstr_split("a,bc,,d", ',', out, 4) == 4);
    CHECK(strcmp(out[0], "a") == 0);
    CHECK(strcmp(out[1], "bc") == 0);
    CHECK(strcmp(out[2], "") == 0);
    CHECK(strcmp(out[3], "d") == 0);
    CHECK(cstr_split("x;y;z", ';', out, 2) == 2);
    CHECK(strcmp(out[1], "y") == 0);
    CHECK(cstr_split("", ',', out, 4) == 1);
    CHECK(cstr_split("abc", ',', out, 0) == 0);
}

static void test_reverse(void) {
    char a[] = "abcd";
    cstr_reverse(a);
    CHECK(strcmp(a, "dcba") == 0);
    char b[] = "abc";
    cstr_reverse(b);
    CHECK(strcmp(b, "cba") == 0);
    char c[] = "";
    cstr_reverse(c);
    CHECK(strcmp(c, "") == 0);
}

static void test_upper(void) {
    char a[] = "Hello, World 42!";
    cstr_upper(a);
    CHECK(strcmp(a, "HELLO, WORLD 42!") == 0);
    char b[] = "az{`";
    cstr_upper(b);
    CHECK(strcmp(b, "AZ{`") == 0);
}

static void test_replace_char(void) {
    char a[] = "a-b-c";
    CHECK(cstr_replace_char(a, '-', '+') == 2);
    CHECK(strcmp(a, "a+b+c") == 0);
    CHECK(cstr_replace_char(a, 'z', 'y') == 0);
}

static void test_palindrome(void) {
    CHECK(cstr_is_palindrome("A man, a plan, a canal: Panama") == 1);
    CHECK(cstr_is_palindrome("abca") == 0);
    CHECK(cstr_is_palindrome("") == 1);
    CHECK(cstr_is_palindrome("ab") == 0);
    CHECK(cstr_is_palindrome("a.") == 1);
}

int main(void) {
    RUN(test_trim);
    RUN(test_starts_with);
    RUN(test_count_char);
    RUN(test_split);
    RUN(test_reverse);
    RUN(test_upper);
    RUN(test_replace_char);
    RUN(test_palindrome);
    return CHECK_SUMMARY();
}
