/*
 * action: render a JSON value byte for byte as jq 1.6's `jq .` does.
 *
 * Pure. Must never emit invalid UTF-8 or a raw control character: the
 * file is read by people and by tools that trust it.
 */
#include "action.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct buf {
	char *data;
	size_t len, cap;
	int failed;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
	if (b->failed)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		char *p;

		while (b->len + n + 1 > cap)
			cap *= 2;
		p = realloc(b->data, cap);
		if (!p) {
			b->failed = 1;
			return;
		}
		b->data = p;
		b->cap = cap;
	}
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

static void buf_indent(struct buf *b, int depth)
{
	static const char spaces[] = "                                ";

	for (int n = depth * 2; n > 0; n -= 32)
		buf_add(b, spaces, n > 32 ? 32 : (size_t)n);
}

/*
 * jq's reading of UTF-8: the length a lead byte announces, a sequence cut
 * short by a byte that is not a continuation ends there, and overlong,
 * surrogate or out-of-range values become one U+FFFD each.
 */
static size_t utf8_next(const unsigned char *s, size_t n, long *cp)
{
	unsigned char c = s[0];
	size_t len;
	long v;

	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c < 0xC2 || c > 0xF4) {
		*cp = -1;
		return 1;
	}
	len = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
	if (len > n) {
		*cp = -1;
		return n;
	}
	v = c & (0x7F >> len);
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80) {
			*cp = -1;
			return i;
		}
		v = (v << 6) | (s[i] & 0x3F);
	}
	if ((len == 3 && v < 0x800) || (len == 4 && v < 0x10000) ||
	    (v >= 0xD800 && v <= 0xDFFF) || v > 0x10FFFF)
		v = -1;
	*cp = v;
	return len;
}

static void render_string(struct buf *b, const char *str)
{
	const unsigned char *s = (const unsigned char *)(str ? str : "");
	size_t n = strlen((const char *)s);

	buf_add(b, "\"", 1);
	for (size_t i = 0; i < n;) {
		size_t plain = i;
		long cp;
		size_t len;
		char esc[16];

		/* Printable ASCII needs no escape: copied a run at a time. */
		while (plain < n && s[plain] >= 0x20 && s[plain] < 0x7F &&
		       s[plain] != '"' && s[plain] != '\\')
			plain++;
		if (plain > i) {
			buf_add(b, (const char *)s + i, plain - i);
			i = plain;
			continue;
		}
		len = utf8_next(s + i, n - i, &cp);
		if (cp < 0) {
			buf_add(b, "\xEF\xBF\xBD", 3);
		} else if (cp == '"') {
			buf_add(b, "\\\"", 2);
		} else if (cp == '\\') {
			buf_add(b, "\\\\", 2);
		} else if (cp == '\b') {
			buf_add(b, "\\b", 2);
		} else if (cp == '\f') {
			buf_add(b, "\\f", 2);
		} else if (cp == '\t') {
			buf_add(b, "\\t", 2);
		} else if (cp == '\r') {
			buf_add(b, "\\r", 2);
		} else if (cp == '\n') {
			buf_add(b, "\\n", 2);
		} else if (cp < 0x20 || cp == 0x7F) {
			snprintf(esc, sizeof(esc), "\\u%04x", (unsigned)cp);
			buf_add(b, esc, 6);
		} else {
			buf_add(b, (const char *)s + i, len);
		}
		i += len;
	}
	buf_add(b, "\"", 1);
}

void action_format_number(double d, char *out)
{
	char tmp[40], digits[20];
	int prec, exp10, decpt, nd = 0;
	char *p = out;

	if (isnan(d)) {
		strcpy(out, "null");
		return;
	}
	if (isinf(d))
		d = d > 0 ? DBL_MAX : -DBL_MAX;
	if (signbit(d)) {
		*p++ = '-';
		d = -d;
	}
	/* The shortest digits that read back as the same double. */
	for (prec = 1; prec <= 17; prec++) {
		snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, d);
		if (strtod(tmp, NULL) == d)
			break;
	}
	for (const char *t = tmp; *t && *t != 'e'; t++)
		if (*t >= '0' && *t <= '9')
			digits[nd++] = *t;
	while (nd > 1 && digits[nd - 1] == '0')
		nd--;
	digits[nd] = '\0';
	exp10 = atoi(strchr(tmp, 'e') + 1);
	decpt = exp10 + 1;

	if (d == 0) {
		strcpy(p, "0");
	} else if (decpt <= -4 || decpt > nd + 15) {
		*p++ = digits[0];
		if (nd > 1) {
			*p++ = '.';
			memcpy(p, digits + 1, (size_t)nd - 1);
			p += nd - 1;
		}
		sprintf(p, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
	} else if (decpt <= 0) {
		*p++ = '0';
		*p++ = '.';
		for (int i = 0; i < -decpt; i++)
			*p++ = '0';
		strcpy(p, digits);
	} else if (decpt >= nd) {
		memcpy(p, digits, (size_t)nd);
		p += nd;
		for (int i = 0; i < decpt - nd; i++)
			*p++ = '0';
		*p = '\0';
	} else {
		memcpy(p, digits, (size_t)decpt);
		p += decpt;
		*p++ = '.';
		strcpy(p, digits + decpt);
	}
}

/* @s with invalid UTF-8 replaced as jq reads it; NULL if already valid. */
static char *utf8_cleaned(const char *s)
{
	size_t n = strlen(s), i = 0;
	struct buf b = {0};

	for (i = 0; i < n && (unsigned char)s[i] < 0x80; i++)
		;
	if (i == n)
		return NULL;
	for (i = 0; i < n;) {
		long cp;
		size_t len = utf8_next((const unsigned char *)s + i, n - i, &cp);

		if (cp < 0)
			buf_add(&b, "\xEF\xBF\xBD", 3);
		else
			buf_add(&b, s + i, len);
		i += len;
	}
	if (b.failed || (b.len == n && !memcmp(b.data, s, n))) {
		free(b.data);
		return NULL;
	}
	return b.data;
}

struct member {
	const cJSON *item;
	const char *key; /* as jq reads it */
	size_t pos;
};

static int cmp_member(const void *x, const void *y)
{
	const struct member *a = x, *b = y;
	int c = strcmp(a->key, b->key);

	if (c)
		return c;
	return a->pos < b->pos ? -1 : a->pos > b->pos;
}

/*
 * jq keeps one member per key: at the place where the key first
 * appeared, with the value it was given last. Fills @val[i] with the
 * value to print for member i, or NULL when member i is a later
 * duplicate. Returns -1 on allocation failure.
 */
static int dedup_members(const cJSON *obj, size_t n, const cJSON **val)
{
	struct member *m = calloc(n, sizeof(*m));
	char **clean = calloc(n, sizeof(*clean));
	size_t i = 0;
	const cJSON *it;

	if (!m || !clean) {
		free(m);
		free(clean);
		return -1;
	}
	for (it = obj->child; it; it = it->next, i++) {
		clean[i] = utf8_cleaned(it->string ? it->string : "");
		m[i].item = it;
		m[i].key = clean[i] ? clean[i] : (it->string ? it->string : "");
		m[i].pos = i;
	}
	qsort(m, n, sizeof(*m), cmp_member);
	for (size_t g = 0; g < n;) {
		size_t end = g + 1;

		while (end < n && !strcmp(m[end].key, m[g].key))
			end++;
		val[m[g].pos] = m[end - 1].item;
		for (size_t k = g + 1; k < end; k++)
			val[m[k].pos] = NULL;
		g = end;
	}
	for (i = 0; i < n; i++)
		free(clean[i]);
	free(clean);
	free(m);
	return 0;
}

static int render_value(struct buf *b, const cJSON *v, int depth)
{
	char num[ACTION_NUMBER_MAX];

	if (depth > ACTION_MAX_DEPTH)
		return -1;
	if (cJSON_IsNull(v)) {
		buf_str(b, "null");
	} else if (cJSON_IsFalse(v)) {
		buf_str(b, "false");
	} else if (cJSON_IsTrue(v)) {
		buf_str(b, "true");
	} else if (cJSON_IsNumber(v)) {
		action_format_number(v->valuedouble, num);
		buf_str(b, num);
	} else if (cJSON_IsString(v)) {
		render_string(b, v->valuestring);
	} else if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
		int is_obj = cJSON_IsObject(v);
		size_t n = 0, i = 0;
		const cJSON **vals = NULL;
		const cJSON *it;
		int first = 1, rc = 0;

		if (!v->child) {
			buf_str(b, is_obj ? "{}" : "[]");
			return 0;
		}
		for (it = v->child; it; it = it->next)
			n++;
		if (is_obj) {
			vals = malloc(n * sizeof(*vals));
			if (!vals || dedup_members(v, n, vals)) {
				free(vals);
				return -1;
			}
		}
		buf_str(b, is_obj ? "{" : "[");
		for (it = v->child; it && !rc; it = it->next, i++) {
			if (is_obj && !vals[i])
				continue;
			buf_str(b, first ? "\n" : ",\n");
			first = 0;
			buf_indent(b, depth + 1);
			if (is_obj) {
				render_string(b, it->string);
				buf_str(b, ": ");
			}
			rc = render_value(b, is_obj ? vals[i] : it, depth + 1);
		}
		free(vals);
		if (rc)
			return -1;
		buf_str(b, "\n");
		buf_indent(b, depth);
		buf_str(b, is_obj ? "}" : "]");
	} else {
		/* cJSON_Raw and invalid nodes never come from the parser. */
		buf_str(b, "null");
	}
	return 0;
}

char *action_render(const cJSON *json, size_t *len)
{
	struct buf b = {0};

	if (!json || render_value(&b, json, 0) < 0) {
		free(b.data);
		return NULL;
	}
	buf_add(&b, "\n", 1);
	if (b.failed) {
		free(b.data);
		return NULL;
	}
	*len = b.len;
	return b.data;
}
