/*
 * validate: what an action file may say, checked before any request;
 * and what a save sends: the minimal PATCH and the conflict check.
 *
 * Pure. Mirrors the server's rules (posthog-api.md section 2) and goes
 * beyond them where the server would silently drop a typo. Never lets a
 * read-only field change without saying so.
 */
#include "action.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN 400
#define SLACK_MAX_LEN 1200
/* Deepest nesting accepted in an action file. */
#define MAX_FILE_DEPTH 128

enum ftype { F_STR, F_STR_NULL, F_BOOL, F_TAGS, F_STEPS, F_ANY };

struct field {
	const char *name;
	enum ftype type;
	int writable;
};

static const struct field fields[] = {
	{"id", F_ANY, 0},
	{"name", F_STR_NULL, 1},
	{"description", F_STR, 1},
	{"tags", F_TAGS, 1},
	{"post_to_slack", F_BOOL, 1},
	{"slack_message_format", F_STR, 1},
	{"steps", F_STEPS, 1},
	{"created_at", F_ANY, 0},
	{"created_by", F_ANY, 0},
	{"deleted", F_BOOL, 1},
	{"is_calculating", F_ANY, 0},
	{"last_calculated_at", F_STR_NULL, 1},
	{"team_id", F_ANY, 0},
	{"is_action", F_ANY, 0},
	{"bytecode_error", F_ANY, 0},
	{"pinned_at", F_STR_NULL, 1},
	{"creation_context", F_ANY, 0},
	{"user_access_level", F_ANY, 0},
	{"reference_count", F_ANY, 0},
	{"_create_in_folder", F_STR, 1},
};

static const char *const step_strings[] = {"event", "selector", "tag_name",
					   "text", "href", "url"};
static const char *const step_matchings[] = {"text_matching", "href_matching",
					     "url_matching"};

static const struct field *find_field(const char *name)
{
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		if (!strcmp(fields[i].name, name))
			return &fields[i];
	return NULL;
}

static int in_list(const char *s, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(s, list[i]))
			return 1;
	return 0;
}

#define IN_LIST(s, l) in_list(s, l, sizeof(l) / sizeof(l[0]))

/* Edit distance, for "did you mean"; stops counting at 3. */
static int distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	int row[64];

	if (la > 60 || lb > 60)
		return 3;
	for (size_t j = 0; j <= lb; j++)
		row[j] = (int)j;
	for (size_t i = 1; i <= la; i++) {
		int prev = row[0], cur;

		row[0] = (int)i;
		for (size_t j = 1; j <= lb; j++) {
			cur = row[j];
			row[j] = a[i - 1] == b[j - 1] ? prev
						       : 1 + (prev < row[j - 1]
							      ? (prev < row[j] ? prev : row[j])
							      : (row[j - 1] < row[j] ? row[j - 1] : row[j]));
			prev = cur;
		}
	}
	return row[lb];
}

/* @key as it may appear in a message: control characters as '?'. */
static void clean_key(const char *key, char *out, size_t outlen)
{
	size_t n = 0;

	for (; *key && n + 1 < outlen; key++)
		out[n++] = (unsigned char)*key < 0x20 || *key == 0x7F ? '?' : *key;
	out[n] = '\0';
}

static void unknown_field(const char *where, const char *key,
			  const char *const *known, size_t n, char *why,
			  size_t whylen)
{
	const char *best = NULL;
	int best_d = 3;
	char shown[64];

	clean_key(key, shown, sizeof(shown));
	key = shown;
	for (size_t i = 0; i < n; i++) {
		int d = distance(key, known[i]);

		if (d < best_d) {
			best_d = d;
			best = known[i];
		}
	}
	if (best)
		snprintf(why, whylen, "unknown field '%s'%s (did you mean '%s'?)",
			 key, where, best);
	else
		snprintf(why, whylen, "unknown field '%s'%s", key, where);
}

static size_t utf8_chars(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		n += ((unsigned char)*s & 0xC0) != 0x80;
	return n;
}

static int is_blank(const char *s)
{
	for (; *s; s++)
		if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r' &&
		    *s != '\f' && *s != '\v')
			return 0;
	return 1;
}

static int check_step(const cJSON *step, int i, char *why, size_t whylen)
{
	static const char *const known[] = {
		"event",	 "properties",	  "selector",
		"selector_regex", "tag_name",	  "text",
		"text_matching", "href",	  "href_matching",
		"url",		 "url_matching",
	};
	const cJSON *f;

	if (!cJSON_IsObject(step)) {
		snprintf(why, whylen, "steps[%d] must be an object", i);
		return -1;
	}
	cJSON_ArrayForEach(f, step)
	{
		char where[32];

		snprintf(where, sizeof(where), " in steps[%d]", i);
		if (!IN_LIST(f->string, known)) {
			unknown_field(where, f->string, known,
				      sizeof(known) / sizeof(known[0]), why,
				      whylen);
			return -1;
		}
		if (IN_LIST(f->string, step_strings)) {
			if (!cJSON_IsNull(f) && !cJSON_IsString(f)) {
				snprintf(why, whylen,
					 "steps[%d].%s must be a string or null",
					 i, f->string);
				return -1;
			}
			if (cJSON_IsString(f) && !f->valuestring[0]) {
				snprintf(why, whylen,
					 "steps[%d].%s is an empty string: "
					 "use null for no condition",
					 i, f->string);
				return -1;
			}
		} else if (IN_LIST(f->string, step_matchings)) {
			const char *v = cJSON_GetStringValue(f);

			if (!cJSON_IsNull(f) &&
			    (!v || (strcmp(v, "contains") && strcmp(v, "exact") &&
				    strcmp(v, "regex")))) {
				snprintf(why, whylen,
					 "steps[%d].%s must be \"contains\", "
					 "\"exact\", \"regex\" or null",
					 i, f->string);
				return -1;
			}
		} else if (!strcmp(f->string, "properties")) {
			const cJSON *p;

			if (!cJSON_IsNull(f) && !cJSON_IsArray(f)) {
				snprintf(why, whylen,
					 "steps[%d].properties must be a list "
					 "of objects or null",
					 i);
				return -1;
			}
			cJSON_ArrayForEach(p, (cJSON_IsArray(f) ? f : NULL))
			{
				if (!cJSON_IsObject(p)) {
					snprintf(why, whylen,
						 "steps[%d].properties must "
						 "hold only objects",
						 i);
					return -1;
				}
			}
		}
	}
	return 0;
}

static int check_type(const cJSON *v, const struct field *fd, char *why,
		      size_t whylen)
{
	const cJSON *it;
	int i = 0;

	switch (fd->type) {
	case F_STR:
		if (cJSON_IsString(v))
			return 0;
		snprintf(why, whylen, "'%s' must be a string", fd->name);
		return -1;
	case F_STR_NULL:
		if (cJSON_IsString(v) || cJSON_IsNull(v))
			return 0;
		snprintf(why, whylen, "'%s' must be a string or null",
			 fd->name);
		return -1;
	case F_BOOL:
		if (cJSON_IsBool(v))
			return 0;
		snprintf(why, whylen, "'%s' must be true or false", fd->name);
		return -1;
	case F_TAGS:
		if (!cJSON_IsArray(v)) {
			snprintf(why, whylen, "'tags' must be a list of strings");
			return -1;
		}
		cJSON_ArrayForEach(it, v)
		{
			if (!cJSON_IsString(it)) {
				snprintf(why, whylen,
					 "tags[%d] must be a string", i);
				return -1;
			}
			i++;
		}
		return 0;
	case F_STEPS:
		if (!cJSON_IsArray(v)) {
			snprintf(why, whylen, "'steps' must be a list of steps");
			return -1;
		}
		cJSON_ArrayForEach(it, v)
		{
			if (check_step(it, i++, why, whylen))
				return -1;
		}
		return 0;
	case F_ANY:
		return 0;
	}
	return 0;
}

/* Line and column (1-based) of byte @off in @text. */
static void position(const char *text, size_t off, int *line, int *col)
{
	*line = 1;
	*col = 1;
	for (size_t i = 0; i < off; i++) {
		if (text[i] == '\n') {
			(*line)++;
			*col = 1;
		} else if (((unsigned char)text[i] & 0xC0) != 0x80) {
			(*col)++;
		}
	}
}

static int cmp_keys(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* What duplicate_key answers when it could not look. */
static const char no_memory[] = "";

/*
 * Finds a key given twice in one object, at any depth: which copy would
 * count is not obvious to a reader, and jq shows only the last. NULL if
 * none, no_memory if it could not tell.
 */
static const char *duplicate_key(const cJSON *v, int depth)
{
	const char **keys;
	const char *dup = NULL;
	size_t n = 0, i = 0;
	const cJSON *it;

	if (depth > MAX_FILE_DEPTH + 1)
		return NULL;
	for (it = v->child; it; it = it->next) {
		n++;
		if (cJSON_IsObject(it) || cJSON_IsArray(it)) {
			dup = duplicate_key(it, depth + 1);
			if (dup)
				return dup;
		}
	}
	if (!cJSON_IsObject(v) || n < 2)
		return NULL;
	keys = malloc(n * sizeof(*keys));
	if (!keys)
		return no_memory;
	for (it = v->child; it; it = it->next)
		keys[i++] = it->string ? it->string : "";
	qsort(keys, n, sizeof(*keys), cmp_keys);
	for (i = 1; i < n && !dup; i++)
		if (!strcmp(keys[i - 1], keys[i]))
			dup = keys[i];
	free(keys);
	return dup;
}

/*
 * cJSON ends a string at an escaped NUL, which would change a key or a
 * value silently. Returns the offset of the first "\u0000", or -1.
 */
static long escaped_nul(const char *text, size_t len)
{
	int in_str = 0;

	for (size_t i = 0; i < len; i++) {
		if (!in_str) {
			in_str = text[i] == '"';
		} else if (text[i] == '"') {
			in_str = 0;
		} else if (text[i] == '\\' && i + 1 < len) {
			if (text[i + 1] == 'u' && i + 5 < len &&
			    !strncmp(text + i + 2, "0000", 4))
				return (long)i;
			i++;
		}
	}
	return -1;
}

/*
 * A strict JSON syntax check, so that the first error is reported where
 * it is (cJSON's error position can be a character off) and so that what
 * jq refuses is refused here too: raw control characters in strings,
 * leading junk. Returns the offset of the first error, or -1; *what says
 * what was expected there.
 */


struct scan {
	const char *s;
	size_t len, at;
	const char *what;
};

static void skip_ws(struct scan *sc)
{
	while (sc->at < sc->len &&
	       (sc->s[sc->at] == ' ' || sc->s[sc->at] == '\t' ||
		sc->s[sc->at] == '\n' || sc->s[sc->at] == '\r'))
		sc->at++;
}

static int is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
	       (c >= 'A' && c <= 'F');
}

/* The value of four hex digits at @at, or -1. */
static long hex4(const struct scan *sc, size_t at)
{
	long v = 0;

	for (size_t i = at; i < at + 4; i++) {
		char c = i < sc->len ? sc->s[i] : 0;

		if (!is_hex(c))
			return -1;
		v = v * 16 + (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
	}
	return v;
}

static int scan_string(struct scan *sc)
{
	sc->at++; /* the opening quote */
	while (sc->at < sc->len) {
		unsigned char c = (unsigned char)sc->s[sc->at];

		if (c == '"') {
			sc->at++;
			return 0;
		}
		if (c < 0x20) {
			sc->what = "a control character in a string: escape "
				   "it (\\n, \\t, \\u0001)";
			return -1;
		}
		if (c == '\\') {
			char e = sc->at + 1 < sc->len ? sc->s[sc->at + 1] : 0;

			if (e == 'u') {
				long cp = hex4(sc, sc->at + 2);

				if (cp < 0) {
					sc->what = "expected a \\uXXXX escape";
					return -1;
				}
				/* A surrogate must come in a pair. */
				if (cp >= 0xDC00 && cp <= 0xDFFF) {
					sc->what = "expected a character, not half a pair";
					return -1;
				}
				if (cp >= 0xD800 && cp <= 0xDBFF) {
					long lo = sc->at + 7 < sc->len &&
							  sc->s[sc->at + 6] == '\\' &&
							  sc->s[sc->at + 7] == 'u'
						  ? hex4(sc, sc->at + 8)
						  : -1;

					if (lo < 0xDC00 || lo > 0xDFFF) {
						sc->what = "expected a character, not half a pair";
						return -1;
					}
					sc->at += 6;
				}
				sc->at += 6;
				continue;
			}
			if (!e || !strchr("\"\\/bfnrt", e)) {
				sc->what = "expected a valid escape";
				return -1;
			}
			sc->at += 2;
			continue;
		}
		sc->at++;
	}
	sc->what = "expected the end of the string";
	return -1;
}

static int scan_digits(struct scan *sc)
{
	size_t start = sc->at;

	while (sc->at < sc->len && sc->s[sc->at] >= '0' && sc->s[sc->at] <= '9')
		sc->at++;
	return sc->at > start ? 0 : -1;
}

static int scan_number(struct scan *sc)
{
	size_t start = sc->at;

	if (sc->s[sc->at] == '-')
		sc->at++;
	if (sc->at < sc->len && sc->s[sc->at] == '0')
		sc->at++;
	else if (scan_digits(sc))
		goto bad;
	if (sc->at < sc->len && sc->s[sc->at] == '.') {
		sc->at++;
		if (scan_digits(sc))
			goto bad;
	}
	if (sc->at < sc->len && (sc->s[sc->at] == 'e' || sc->s[sc->at] == 'E')) {
		sc->at++;
		if (sc->at < sc->len &&
		    (sc->s[sc->at] == '+' || sc->s[sc->at] == '-'))
			sc->at++;
		if (scan_digits(sc))
			goto bad;
	}
	return 0;
bad:
	sc->at = start; /* the number, not the character, is wrong */
	sc->what = "expected a number";
	return -1;
}

static int scan_value(struct scan *sc, int depth);

static int scan_container(struct scan *sc, int depth)
{
	char close = sc->s[sc->at] == '{' ? '}' : ']';

	if (depth > MAX_FILE_DEPTH) {
		sc->what = "expected less nesting";
		return -1;
	}
	sc->at++;
	skip_ws(sc);
	if (sc->at < sc->len && sc->s[sc->at] == close) {
		sc->at++;
		return 0;
	}
	for (;;) {
		skip_ws(sc);
		if (close == '}') {
			if (sc->at >= sc->len || sc->s[sc->at] != '"') {
				sc->what = "expected a field name in double quotes";
				return -1;
			}
			if (scan_string(sc))
				return -1;
			skip_ws(sc);
			if (sc->at >= sc->len || sc->s[sc->at] != ':') {
				sc->what = "expected ':'";
				return -1;
			}
			sc->at++;
		}
		if (scan_value(sc, depth + 1))
			return -1;
		skip_ws(sc);
		if (sc->at < sc->len && sc->s[sc->at] == ',') {
			sc->at++;
			continue;
		}
		if (sc->at < sc->len && sc->s[sc->at] == close) {
			sc->at++;
			return 0;
		}
		sc->what = close == '}' ? "',' or '}'" : "',' or ']'";
		return -1;
	}
}

static int scan_value(struct scan *sc, int depth)
{
	static const char *const words[] = {"true", "false", "null"};

	skip_ws(sc);
	if (sc->at >= sc->len) {
		sc->what = "expected a value";
		return -1;
	}
	switch (sc->s[sc->at]) {
	case '{':
	case '[':
		return scan_container(sc, depth);
	case '"':
		return scan_string(sc);
	case '-':
	case '0': case '1': case '2': case '3': case '4':
	case '5': case '6': case '7': case '8': case '9':
		return scan_number(sc);
	}
	for (size_t i = 0; i < 3; i++) {
		size_t n = strlen(words[i]);

		if (sc->len - sc->at >= n && !memcmp(sc->s + sc->at, words[i], n)) {
			sc->at += n;
			return 0;
		}
	}
	sc->what = "expected a value";
	return -1;
}

static long json_error(const char *text, size_t len, const char **what)
{
	struct scan sc = {text, len, 0, NULL};

	if (!scan_value(&sc, 0)) {
		skip_ws(&sc);
		if (sc.at == len)
			return -1;
		sc.what = "text after the end of the object";
	}
	*what = sc.what;
	return (long)sc.at;
}

cJSON *action_parse(const char *text, size_t len, const cJSON *base,
		    char *why, size_t whylen)
{
	static const char *known[sizeof(fields) / sizeof(fields[0])];
	const cJSON *f;
	cJSON *obj;

	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		known[i] = fields[i].name;
	{
		const char *what = NULL;
		long off = json_error(text, len, &what);

		if (off >= 0) {
			int line, col;

			/* An error at the very end is shown at the end of the
			 * last line, not on a line that does not exist. */
			if ((size_t)off == len && off > 0 && text[off - 1] == '\n')
				off--;
			position(text, (size_t)off, &line, &col);
			snprintf(why, whylen,
				 "invalid JSON at line %d, column %d: %s", line,
				 col, what);
			return NULL;
		}
	}
	obj = cJSON_ParseWithLength(text, len);
	if (!obj) {
		snprintf(why, whylen, "invalid JSON");
		return NULL;
	}
	if (!cJSON_IsObject(obj)) {
		snprintf(why, whylen, "an action file holds one JSON object");
		goto bad;
	}
	{
		long nul = escaped_nul(text, len);
		const char *dup;

		if (nul >= 0) {
			int line, col;

			position(text, (size_t)nul, &line, &col);
			snprintf(why, whylen,
				 "line %d, column %d: \\u0000 (NUL) is not "
				 "allowed in a string",
				 line, col);
			goto bad;
		}
		dup = duplicate_key(obj, 0);
		if (dup == no_memory) {
			snprintf(why, whylen, "out of memory");
			goto bad;
		}
		if (dup) {
			char shown[64];

			clean_key(dup, shown, sizeof(shown));
			snprintf(why, whylen, "field '%s' is given twice",
				 shown);
			goto bad;
		}
	}
	cJSON_ArrayForEach(f, obj)
	{
		const struct field *fd = find_field(f->string);
		const cJSON *was;

		if (!fd) {
			unknown_field("", f->string, known,
				      sizeof(known) / sizeof(known[0]), why,
				      whylen);
			goto bad;
		}
		if (!fd->writable) {
			if (!base)
				continue;
			was = cJSON_GetObjectItemCaseSensitive(base, f->string);
			if (!was || !cJSON_Compare(was, f, 1)) {
				snprintf(why, whylen,
					 "'%s' is read-only and was changed",
					 f->string);
				goto bad;
			}
			continue;
		}
		if (check_type(f, fd, why, whylen))
			goto bad;
	}
	f = cJSON_GetObjectItemCaseSensitive(obj, "name");
	if (cJSON_IsString(f) && is_blank(f->valuestring)) {
		snprintf(why, whylen, "'name' is blank");
		goto bad;
	}
	if (cJSON_IsString(f) && utf8_chars(f->valuestring) > NAME_MAX_LEN) {
		snprintf(why, whylen, "'name' is longer than %d characters",
			 NAME_MAX_LEN);
		goto bad;
	}
	f = cJSON_GetObjectItemCaseSensitive(obj, "slack_message_format");
	if (cJSON_IsString(f) && utf8_chars(f->valuestring) > SLACK_MAX_LEN) {
		snprintf(why, whylen,
			 "'slack_message_format' is longer than %d characters",
			 SLACK_MAX_LEN);
		goto bad;
	}
	return obj;
bad:
	cJSON_Delete(obj);
	return NULL;
}

/* A copy of @steps without the computed "selector_regex". */
static cJSON *steps_without_computed(const cJSON *steps)
{
	cJSON *copy = cJSON_Duplicate(steps, 1), *s;

	cJSON_ArrayForEach(s, (cJSON_IsArray(copy) ? copy : NULL))
	{
		cJSON_DeleteItemFromObjectCaseSensitive(s, "selector_regex");
	}
	return copy;
}

/* Equal as jq shows them: rendered bytes, so duplicate keys count once. */
static int same_json(const cJSON *a, const cJSON *b)
{
	size_t la, lb;
	char *ra = action_render(a, &la);
	char *rb = action_render(b, &lb);
	int same = ra && rb && la == lb && !memcmp(ra, rb, la);

	free(ra);
	free(rb);
	return same;
}

static int same_value(const char *field, const cJSON *a, const cJSON *b)
{
	cJSON *sa, *sb;
	int same;

	if (!a || !b)
		return a == b;
	if (strcmp(field, "steps"))
		return same_json(a, b);
	sa = steps_without_computed(a);
	sb = steps_without_computed(b);
	same = same_json(sa, sb);
	cJSON_Delete(sa);
	cJSON_Delete(sb);
	return same;
}

/* Adds field @f of @edit to @body; steps go without computed keys. */
static int add_field(cJSON *body, const cJSON *f)
{
	cJSON *v = strcmp(f->string, "steps") ? cJSON_Duplicate(f, 1)
					       : steps_without_computed(f);

	return v && cJSON_AddItemToObject(body, f->string, v) ? 0 : -1;
}

cJSON *action_diff(const cJSON *base, const cJSON *edit, int *oom)
{
	cJSON *body = cJSON_CreateObject();
	const cJSON *f;

	*oom = !body;
	cJSON_ArrayForEach(f, (body ? edit : NULL))
	{
		const struct field *fd = find_field(f->string);

		if (!fd || !fd->writable ||
		    same_value(f->string,
			       cJSON_GetObjectItemCaseSensitive(base, f->string),
			       f))
			continue;
		if (add_field(body, f)) {
			*oom = 1;
			break;
		}
	}
	if (*oom || !body || !body->child) {
		cJSON_Delete(body);
		return NULL;
	}
	return body;
}

int action_conflicts(const cJSON *base, const cJSON *server,
		     const cJSON *patch, char *out, size_t outlen)
{
	const cJSON *f;
	size_t at = 0;
	int n = 0;

	if (outlen)
		out[0] = '\0';
	cJSON_ArrayForEach(f, patch)
	{
		const cJSON *was = cJSON_GetObjectItemCaseSensitive(base, f->string);
		const cJSON *now = cJSON_GetObjectItemCaseSensitive(server, f->string);

		if (same_value(f->string, was, now))
			continue;
		n++;
		if (at < outlen)
			at += (size_t)snprintf(out + at, outlen - at, "%s%s",
					       n > 1 ? ", " : "", f->string);
	}
	return n;
}

cJSON *action_create_body(const cJSON *edit, const char *fallback_name)
{
	cJSON *body = cJSON_CreateObject();
	const cJSON *f;

	cJSON_ArrayForEach(f, (body ? edit : NULL))
	{
		const struct field *fd = find_field(f->string);

		if (fd && fd->writable && add_field(body, f)) {
			cJSON_Delete(body);
			return NULL;
		}
	}
	if (body && !cJSON_GetObjectItemCaseSensitive(body, "name") &&
	    fallback_name && !cJSON_AddStringToObject(body, "name", fallback_name)) {
		cJSON_Delete(body);
		return NULL;
	}
	return body;
}
