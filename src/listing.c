/*
 * listing: parse what the server answers, whatever shape it has.
 *
 * Pure. Must never trust a field's type, recurse without a bound, or
 * copy a control character from the server into a message.
 */
#include "listing.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void set_err(char *err, size_t errlen, const char *msg)
{
	if (err && errlen)
		snprintf(err, errlen, "%s", msg);
}

/* The deepest nesting of arrays and objects in @body, outside strings. */
static size_t json_depth(const char *body, size_t len)
{
	size_t depth = 0, max = 0;
	int in_str = 0;

	for (size_t i = 0; i < len; i++) {
		char c = body[i];

		if (in_str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = 0;
		} else if (c == '"') {
			in_str = 1;
		} else if (c == '[' || c == '{') {
			if (++depth > max)
				max = depth;
		} else if ((c == ']' || c == '}') && depth) {
			depth--;
		}
	}
	return max;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The code unit of a "\\uXXXX" escape at @p (6 bytes), or -1. */
static long escape_at(const char *p, const char *end)
{
	long v = 0;

	if (end - p < 6 || p[0] != '\\' || p[1] != 'u')
		return -1;
	for (int i = 2; i < 6; i++) {
		int h = hexval(p[i]);

		if (h < 0)
			return -1;
		v = v * 16 + h;
	}
	return v;
}

/*
 * cJSON refuses a whole body for one lone surrogate escape, and cuts a
 * string at an escaped NUL. jq shows U+FFFD for the first; the second
 * cannot live in a C string. Both become "\\ufffd" (the same length),
 * so one odd field never hides a whole listing. Returns a malloc'ed copy
 * when something changed, else NULL.
 */
static char *soften_escapes(const char *body, size_t len)
{
	const char *end = body + len;
	char *copy = NULL;
	int in_str = 0;

	for (const char *p = body; p < end; p++) {
		long u, lo;

		if (!in_str) {
			in_str = *p == '"';
			continue;
		}
		if (*p == '"') {
			in_str = 0;
			continue;
		}
		if (*p != '\\')
			continue;
		u = escape_at(p, end);
		if (u < 0) {
			p++; /* some other escape: skip its character */
			continue;
		}
		if (u >= 0xD800 && u <= 0xDBFF) {
			lo = escape_at(p + 6, end);
			if (lo >= 0xDC00 && lo <= 0xDFFF) {
				p += 11; /* a proper pair */
				continue;
			}
		} else if (u != 0 && (u < 0xDC00 || u > 0xDFFF)) {
			p += 5;
			continue;
		}
		if (!copy) {
			copy = malloc(len + 1);
			if (!copy)
				return NULL;
			memcpy(copy, body, len);
			copy[len] = '\0';
		}
		memcpy(copy + (p - body), "\\ufffd", 6);
		p += 5;
	}
	return copy;
}

cJSON *listing_parse_json(const char *body, size_t len, char *err,
			  size_t errlen)
{
	const char *end = NULL;
	char *soft = NULL;
	cJSON *root;

	if (!body || !len) {
		set_err(err, errlen, "empty response body");
		return NULL;
	}
	if (json_depth(body, len) > LISTING_MAX_DEPTH) {
		set_err(err, errlen, "response nested too deeply");
		return NULL;
	}
	soft = soften_escapes(body, len);
	if (soft)
		body = soft;
	root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
	if (!root) {
		set_err(err, errlen,
			body[0] == '<' ? "response is HTML, not JSON"
				       : "response is not valid JSON");
	} else {
		/* Only white space may follow the value. */
		for (size_t i = (size_t)(end - body); i < len; i++) {
			if (body[i] != ' ' && body[i] != '\n' &&
			    body[i] != '\r' && body[i] != '\t') {
				cJSON_Delete(root);
				root = NULL;
				set_err(err, errlen,
					"response has data after the JSON value");
				break;
			}
		}
	}
	free(soft);
	return root;
}

int listing_parse(const char *body, size_t len, struct listing_page *page,
		  char *err, size_t errlen)
{
	cJSON *root, *results, *count, *next;

	memset(page, 0, sizeof(*page));
	page->count = -1;
	root = listing_parse_json(body, len, err, errlen);
	if (!root)
		return -EPROTO;
	if (cJSON_IsArray(root)) {
		/* A bare list: everything at once. */
		page->root = root;
		page->results = root;
		return 0;
	}
	results = cJSON_GetObjectItemCaseSensitive(root, "results");
	if (!cJSON_IsObject(root) || !cJSON_IsArray(results)) {
		set_err(err, errlen, "response has no \"results\" list");
		cJSON_Delete(root);
		return -EPROTO;
	}
	count = cJSON_GetObjectItemCaseSensitive(root, "count");
	if (cJSON_IsNumber(count) && count->valuedouble >= 0 &&
	    count->valuedouble <= 9007199254740992.0 &&
	    floor(count->valuedouble) == count->valuedouble)
		page->count = (long long)count->valuedouble;
	next = cJSON_GetObjectItemCaseSensitive(root, "next");
	if (cJSON_IsString(next) && next->valuestring[0]) {
		page->has_next = 1;
		page->next = strdup(next->valuestring);
	}
	page->root = root;
	page->results = results;
	return 0;
}

void listing_free(struct listing_page *page)
{
	cJSON_Delete(page->root);
	free(page->next);
	memset(page, 0, sizeof(*page));
}

int listing_item_id(const cJSON *item, uint64_t *id)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(item, "id");

	if (!cJSON_IsNumber(v) || !(v->valuedouble >= 1) ||
	    v->valuedouble >= 9007199254740992.0 ||
	    floor(v->valuedouble) != v->valuedouble)
		return -1;
	*id = (uint64_t)v->valuedouble;
	return 0;
}

const char *listing_item_name(const cJSON *item)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(item, "name");

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/*
 * The length of the valid UTF-8 character at @u, or 0 when it is not one
 * (a stray or cut sequence, an overlong form, a surrogate, past U+10FFFF).
 * *cp gets its code point.
 */
static size_t utf8_char(const unsigned char *u, long *cp)
{
	size_t len;
	long c;

	if (u[0] < 0x80) {
		*cp = u[0];
		return 1;
	}
	if (u[0] >= 0xC2 && u[0] <= 0xDF)
		len = 2, c = u[0] & 0x1F;
	else if (u[0] >= 0xE0 && u[0] <= 0xEF)
		len = 3, c = u[0] & 0x0F;
	else if (u[0] >= 0xF0 && u[0] <= 0xF4)
		len = 4, c = u[0] & 0x07;
	else
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((u[i] & 0xC0) != 0x80)
			return 0;
		c = (c << 6) | (u[i] & 0x3F);
	}
	if ((len == 3 && c < 0x800) || (len == 4 && c < 0x10000) ||
	    (c >= 0xD800 && c <= 0xDFFF) || c > 0x10FFFF)
		return 0;
	*cp = c;
	return len;
}

/*
 * Copies @s into @out with control characters (C0, DEL, C1) and invalid
 * UTF-8 as '?', cut to @max bytes at a character boundary.
 */
static size_t copy_clean(char *out, size_t outlen, const char *s, size_t max)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t n = 0, i = 0;

	if (!outlen)
		return 0;
	while (u[i] && n + 1 < outlen && n < max) {
		long cp = 0;
		size_t clen = utf8_char(u + i, &cp);

		if (!clen || cp < 0x20 || (cp >= 0x7F && cp < 0xA0)) {
			out[n++] = '?';
			i += clen ? clen : 1;
			continue;
		}
		if (n + clen >= outlen || n + clen > max)
			break;
		memcpy(out + n, u + i, clen);
		n += clen;
		i += clen;
	}
	out[n] = '\0';
	return n;
}

static const char *status_text(long status)
{
	switch (status) {
	case 400: return "bad request";
	case 401: return "not authenticated";
	case 403: return "permission denied";
	case 404: return "not found";
	case 405: return "method not allowed";
	case 413: return "request too large";
	case 429: return "rate limited";
	case 500: return "server error";
	case 502: return "bad gateway";
	case 503: return "service unavailable";
	case 504: return "gateway timeout";
	default: return "unexpected answer";
	}
}

void listing_error_reason(const char *body, size_t len, long status,
			  char *out, size_t outlen)
{
	cJSON *root = NULL, *detail, *attr;
	size_t n;

	if (!outlen)
		return;
	if (body && len && json_depth(body, len) <= LISTING_MAX_DEPTH)
		root = cJSON_ParseWithLength(body, len);
	detail = cJSON_GetObjectItemCaseSensitive(root, "detail");
	attr = cJSON_GetObjectItemCaseSensitive(root, "attr");
	if (cJSON_IsObject(root) && cJSON_IsString(detail)) {
		n = copy_clean(out, outlen, detail->valuestring, 300);
		if (cJSON_IsString(attr) && n + 8 < outlen) {
			strcpy(out + n, " (attr ");
			n += 7;
			n += copy_clean(out + n, outlen - n - 1,
					attr->valuestring, 100);
			strcpy(out + n, ")");
		}
	} else {
		snprintf(out, outlen, "HTTP %ld: %s%s", status,
			 status_text(status),
			 body && len && body[0] == '<' ? " (an HTML page)" : "");
	}
	cJSON_Delete(root);
}
