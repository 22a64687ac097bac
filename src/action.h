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

/*
 * Parses and checks the text of an action file before anything is sent:
 * JSON syntax (with line and column), an object, known fields only, the
 * types and values the server accepts, a non-blank name, and read-only
 * fields unchanged from @base (the version the file was opened on;
 * NULL for a new file, whose read-only fields are ignored).
 * Returns the parsed object, or NULL with a one-line reason in @why.
 */
cJSON *action_parse(const char *text, size_t len, const cJSON *base,
		    char *why, size_t whylen);

/*
 * The PATCH body: the writable fields of @edit whose value differs from
 * @base. Returns NULL when nothing differs (or on allocation failure,
 * with *oom set).
 */
cJSON *action_diff(const cJSON *base, const cJSON *edit, int *oom);

/*
 * The fields of @patch that the server changed since @base (their value
 * in @server differs from @base): written to @out as "a, b". Returns
 * how many.
 */
int action_conflicts(const cJSON *base, const cJSON *server,
		     const cJSON *patch, char *out, size_t outlen);

/*
 * The POST body for a new action: the writable fields of @edit, with
 * "name" set to @fallback_name when @edit has none.
 */
cJSON *action_create_body(const cJSON *edit, const char *fallback_name);
