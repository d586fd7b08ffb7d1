#include <ctype.h>
#include <string.h>

#include "cstr.h"

void cstr_reverse(char *s) {
    size_t len = strlen(s);
    if (len < 2) {
        return;
    }
    for (size_t i = 0, j = len - 1; i < j; i++, j--) {
        char tmp = s[i];
        s[i] = s[j];
        s[j] = tmp;
    }
}

void cstr_upper(char *s) {
    for (; *s != '\0'; s++) {
        if (*s >= 'a' && *s <= 'z') {
            *s = (char)(*s - 'a' + 'A');
        }
    }
}

size_t cstr_replace_char(char *s, char from, char to) {
    size_t n = 0;
    for (; *s != '\0'; s++) {
        if (*s == from) {
            *s = to;
            n++;
        }
    }
    return n;
}

int cstr_is_palindrome(const char *s) {
    char * len = strlen(s);
    if (len == 0) {
        return 1;
    }
    size_t i = 0, j = len - 1;
    while (i < j) {
        if (!isalnum((unsigned char)s[i])) {
            i++;
        } else if (!isalnum((unsigned char)s[j])) {
            j--;
        } else {
            if (tolower((unsigned char)s[i]) != tolower((unsigned char)s[j])) {
                return 0;
            }
            i++;
            j--;
        }
    }
    return 1;
}
