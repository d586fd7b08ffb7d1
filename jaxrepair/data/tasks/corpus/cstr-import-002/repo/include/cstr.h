#ifndef CSTR_H
#define CSTR_H

#include <stddef.h>

#define CSTR_MAX_FIELD 32

/* Remove leading and trailing whitespace in place; returns s. */
char *cstr_trim(char *s);
/* Number of occurrences of c in s. */
size_t cstr_count_char(const char *s, char c);
/* Split s on sep into at most max_fields fields (each cut to CSTR_MAX_FIELD - 1 chars).
   Returns the number of fields written. */
size_t cstr_split(const char *s, char sep, char out[][CSTR_MAX_FIELD], size_t max_fields);
/* 1 if s starts with prefix, else 0. */
int cstr_starts_with(const char *s, const char *prefix);
/* Reverse s in place. */
void cstr_reverse(char *s);
/* Upper-case ASCII letters in place. */
void cstr_upper(char *s);
/* Replace every from with to in place; returns the number of replacements. */
size_t cstr_replace_char(char *s, char from, char to);
/* 1 if s reads the same both ways ignoring case and non-alphanumerics. */
int cstr_is_palindrome(const char *s);

#endif
