/*
 * action: the text of an action file.
 *
 * Pure: renders a JSON value exactly as `jq .` (jq 1.6) renders it, so
 * `jq . FILE | cmp - FILE` holds. No I/O, no globals, no locks.
 */
#ifndef PHFS_ACTION_H
#define PHFS_ACTION_H

#include <stddef.h>
#include <cJSON.h>

/*
 * Renders @json with two-space indent, keys in their order, non-ASCII
 * as UTF-8 (invalid UTF-8 becomes U+FFFD, as jq does) and a trailing
 * newline. Returns a malloc'ed buffer and sets *len, or NULL on
 * allocation failure or nesting deeper than ACTION_MAX_DEPTH.
 */
char *action_render(const cJSON *json, size_t *len);

#define ACTION_MAX_DEPTH 512

/* The longest number text with its NUL: a sign, 32 digits, no point. */
#define ACTION_NUMBER_MAX 40

/* Formats a double as jq 1.6 prints numbers into ACTION_NUMBER_MAX bytes. */
void action_format_number(double d, char *out);

#endif
