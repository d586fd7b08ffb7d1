#include <string.h>

#include "cstr.h"

size_t cstr_count_char(const char *s, char c) {
    size_t count = 0;
    for (; *s != '\0'; s++) {
        if (*s == c) {
            count++;
        }
    }
    return count;
}

size_t cstr_split(const char *s, char sep, char out[][CSTR_MAX_FIELD], size_t max_fields) {
    size_t field = 0;
    size_t pos = 0;
    if (max_fields == 0) {
        return 0;
    }
    out[0][0] = '\0';
    for (; *s != '\0'; s++) {
        if (*s == sep) {
            if (field + 1 >= max_fields) {
                break;
            }
            field++;
            pos = 0;
            out[field][0] = '\0';
        } else if (pos < CSTR_MAX_FIELD - 1) {
            out[field][pos++] = *s;
            out[field][pos] = '\0';
        }
    }
    return field + 1;
}
