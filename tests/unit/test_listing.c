/*
 * Unit tests of listing.c: the three list shapes (posthog-api.md section
 * 3), bodies that are not lists at all, item fields of the wrong type,
 * and the one-line reason made from an error body (section 2.1).
 *
 * Every body is handed over in a buffer of exactly its length, without
 * a NUL after it, so a read past the end shows under valgrind or ASan.
 */
#include "listing.h"

#include "tap.h"

#include <cJSON.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A copy of @n bytes of @s with nothing after them. */
static char *exact(const char *s, size_t n)
{
	char *p = malloc(n ? n : 1);

	if (!p)
		abort();
	memcpy(p, s, n);
	return p;
}

struct parsed {
	int rc;
	struct listing_page page;
	char err[256];
};

static void parse(const char *body, struct parsed *r)
{
	size_t n = strlen(body);
	char *copy = exact(body, n);

	memset(r->err, 0, sizeof(r->err));
	r->rc = listing_parse(copy, n, &r->page, r->err, sizeof(r->err));
	free(copy);
}

static int results_size(const struct listing_page *page)
{
	return cJSON_IsArray(page->results) ? cJSON_GetArraySize(page->results)
					    : -1;
}

static const char items2[] =
    "[{\"id\":1,\"name\":\"Signed up\"},{\"id\":2,\"name\":null}]";

static void test_shapes(void)
{
	struct parsed r;
	char body[512];

	snprintf(body, sizeof(body), "{\"results\":%s}", items2);
	parse(body, &r);
	tap_is_int(r.rc, 0, "shape {results}: parses");
	tap_is_int(results_size(&r.page), 2, "shape {results}: two items");
	tap_is_int(r.page.count, -1, "shape {results}: count absent is -1");
	tap_ok(!r.page.has_next && !r.page.next,
	       "shape {results}: no next page");
	listing_free(&r.page);

	snprintf(body, sizeof(body), "{\"count\":2,\"results\":%s}", items2);
	parse(body, &r);
	tap_is_int(r.rc, 0, "shape {count, results}: parses");
	tap_is_int(results_size(&r.page), 2,
		   "shape {count, results}: two items");
	tap_is_int(r.page.count, 2, "shape {count, results}: count 2");
	tap_ok(!r.page.has_next && !r.page.next,
	       "shape {count, results}: no next page");
	listing_free(&r.page);

	snprintf(body, sizeof(body),
		 "{\"count\":250,\"next\":\"https://us.posthog.com/api/"
		 "projects/1/actions/?limit=2&offset=2\",\"previous\":null,"
		 "\"results\":%s}",
		 items2);
	parse(body, &r);
	tap_is_int(r.rc, 0, "shape DRF page: parses");
	tap_is_int(results_size(&r.page), 2, "shape DRF page: two items");
	tap_is_int(r.page.count, 250, "shape DRF page: count 250");
	tap_ok(r.page.has_next, "shape DRF page: has a next page");
	tap_is_str(r.page.next,
		   "https://us.posthog.com/api/projects/1/actions/"
		   "?limit=2&offset=2",
		   "shape DRF page: next is copied");
	listing_free(&r.page);

	snprintf(body, sizeof(body),
		 "{\"count\":250,\"next\":null,\"previous\":\"https://"
		 "us.posthog.com/api/projects/1/actions/?limit=2\","
		 "\"results\":%s}",
		 items2);
	parse(body, &r);
	tap_is_int(r.rc, 0, "shape DRF last page: parses");
	tap_ok(!r.page.has_next && !r.page.next,
	       "shape DRF last page: next null is no next page");
	listing_free(&r.page);

	snprintf(body, sizeof(body),
		 "{\"results\":%s,\"previous\":null,\"next\":null,"
		 "\"count\":2}",
		 items2);
	parse(body, &r);
	tap_ok(r.rc == 0 && r.page.count == 2 && results_size(&r.page) == 2,
	       "shape DRF page, keys in another order");
	listing_free(&r.page);

	parse(items2, &r);
	tap_is_int(r.rc, 0, "bare array: parses");
	tap_is_int(results_size(&r.page), 2, "bare array: two items");
	tap_is_int(r.page.count, -1, "bare array: count is -1");
	tap_ok(!r.page.has_next && !r.page.next, "bare array: no next page");
	listing_free(&r.page);

	parse("{\"results\":[]}", &r);
	tap_ok(r.rc == 0 && results_size(&r.page) == 0, "empty results list");
	listing_free(&r.page);

	parse("[]", &r);
	tap_ok(r.rc == 0 && results_size(&r.page) == 0, "empty bare array");
	listing_free(&r.page);

	parse("  \n{\"results\":[]}\r\n\t ", &r);
	tap_is_int(r.rc, 0, "white space around the body is fine");
	listing_free(&r.page);
}

static void test_count_and_next(void)
{
	static const struct {
		const char *count;
		long long expected;
	} counts[] = {
	    {"0", 0},	   {"7", 7},
	    {"7.0", 7},	   {"-1", -1},
	    {"2.5", -1},   {"\"7\"", -1},
	    {"null", -1},  {"true", -1},
	    {"1e300", -1}, {"[7]", -1},
	    {"{}", -1},	   {"9007199254740991", 9007199254740991LL},
	};
	static const struct {
		const char *next;
		int has_next;
		const char *copy;
	} nexts[] = {
	    {"null", 0, NULL},
	    {"\"\"", 0, NULL},
	    {"0", 0, NULL},
	    {"false", 0, NULL},
	    {"{}", 0, NULL},
	    {"[\"x\"]", 0, NULL},
	    {"\"/api/projects/1/actions/?offset=100\"", 1,
	     "/api/projects/1/actions/?offset=100"},
	};
	struct parsed r;
	char body[256];

	for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
		snprintf(body, sizeof(body), "{\"count\":%s,\"results\":[]}",
			 counts[i].count);
		parse(body, &r);
		if (tap_is_int(r.rc, 0, "count %s: parses", counts[i].count))
			tap_is_int(r.page.count, counts[i].expected,
				   "count %s: is %lld", counts[i].count,
				   counts[i].expected);
		listing_free(&r.page);
	}
	for (size_t i = 0; i < sizeof(nexts) / sizeof(nexts[0]); i++) {
		snprintf(body, sizeof(body), "{\"next\":%s,\"results\":[]}",
			 nexts[i].next);
		parse(body, &r);
		tap_ok(r.rc == 0 && r.page.has_next == nexts[i].has_next,
		       "next %s: has_next %d", nexts[i].next,
		       nexts[i].has_next);
		tap_is_str(r.page.next, nexts[i].copy, "next %s: copy",
			   nexts[i].next);
		listing_free(&r.page);
	}
}

/* -EPROTO, a one-line message naming @word, and nothing to free. */
static void refused_n(const char *body, size_t n, const char *word,
		      const char *why)
{
	struct listing_page page;
	char err[256] = "", *copy = exact(body, n);
	int rc;

	memset(&page, 0x5A, sizeof(page));
	rc = listing_parse(copy, n, &page, err, sizeof(err));
	free(copy);
	if (tap_is_int(rc, -EPROTO, "refused (%s): -EPROTO", why)) {
		tap_ok(err[0] && !strchr(err, '\n') && strstr(err, word),
		       "refused (%s): message mentions '%s'", why, word);
		if (!err[0] || !strstr(err, word))
			tap_diag("message: \"%s\"", err);
		tap_ok(page.root == NULL && page.next == NULL && !page.has_next,
		       "refused (%s): the page holds nothing", why);
	}
	listing_free(&page);
}

static void refused(const char *body, const char *word, const char *why)
{
	refused_n(body, strlen(body), word, why);
}

static void test_refused(void)
{
	static const char html[] =
	    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n"
	    "<body><center><h1>502 Bad Gateway</h1></center></body>\r\n"
	    "</html>\r\n";
	static const char truncated[] =
	    "{\"count\":2,\"results\":[{\"id\":1,\"name\":\"Sig";

	refused("", "empty", "empty body");
	refused(html, "HTML", "an nginx 502 page");
	refused("<!DOCTYPE html><html></html>", "HTML", "a doctype");
	refused("not json", "JSON", "plain text");
	refused("Internal Server Error", "JSON", "a text 500");
	refused(truncated, "JSON", "a truncated body");
	refused("{\"results\":[]", "JSON", "a missing brace");
	refused_n("{\"results\":[]}", 10, "JSON",
		  "the length cuts the body short");
	refused("{\"results\":[]} {\"results\":[]}", "JSON", "two documents");
	refused("{\"results\":[]}<html>", "JSON",
		"trailing garbage after the document");
	refused("{\"results\":{}}", "results", "results is an object");
	refused("{\"results\":null}", "results", "results is null");
	refused("{\"results\":\"[]\"}", "results", "results is a string");
	refused("{\"count\":0}", "results", "no results at all");
	refused("{}", "results", "an empty object");
	refused("{\"Results\":[]}", "results", "results spelt Results");
	refused("\"results\"", "results", "a string");
	refused("42", "results", "a number");
	refused("null", "results", "null");
	refused("true", "results", "true");

	struct listing_page page;
	int rc = listing_parse(NULL, 0, &page, NULL, 0);

	tap_is_int(rc, -EPROTO, "refused (NULL body, no err buffer): -EPROTO");
	listing_free(&page);

	char err[8];

	memset(err, 'X', sizeof(err));
	rc = listing_parse("<html>", 6, &page, err, sizeof(err));
	tap_ok(rc == -EPROTO && memchr(err, '\0', sizeof(err)),
	       "refused (small err buffer): message cut and terminated");
	listing_free(&page);
}

/* [[[...]]] @depth deep, inside {"results": ...} when @wrapped. */
static char *nested(int depth, int wrapped, size_t *len)
{
	char *s = malloc((size_t)depth * 2 + 32), *p;

	if (!s)
		abort();
	p = s;
	if (wrapped)
		p += sprintf(p, "{\"results\":");
	for (int i = 0; i < depth - wrapped; i++)
		*p++ = '[';
	for (int i = 0; i < depth - wrapped; i++)
		*p++ = ']';
	if (wrapped)
		*p++ = '}';
	*len = (size_t)(p - s);
	return s;
}

static void test_depth(void)
{
	struct listing_page page;
	char err[256];
	size_t n;
	char *body;
	int rc;

	body = nested(LISTING_MAX_DEPTH, 1, &n);
	rc = listing_parse(body, n, &page, err, sizeof(err));
	tap_is_int(rc, 0, "depth %d, results wrapped: accepted",
		   LISTING_MAX_DEPTH);
	listing_free(&page);
	free(body);

	body = nested(LISTING_MAX_DEPTH + 1, 1, &n);
	rc = listing_parse(body, n, &page, err, sizeof(err));
	tap_is_int(rc, -EPROTO, "depth %d, results wrapped: -EPROTO",
		   LISTING_MAX_DEPTH + 1);
	tap_ok(strstr(err, "deep") != NULL, "depth %d: message says why",
	       LISTING_MAX_DEPTH + 1);
	listing_free(&page);
	free(body);

	body = nested(100000, 0, &n);
	rc = listing_parse(body, n, &page, err, sizeof(err));
	tap_is_int(rc, -EPROTO, "depth bomb of 100000 '[': -EPROTO");
	listing_free(&page);
	free(body);

	/* Brackets inside strings are text, not nesting. */
	char text[1024];
	int k = sprintf(text, "{\"results\":[{\"id\":1,\"name\":\"");

	for (int i = 0; i < 200; i++)
		text[k++] = i % 2 ? '{' : '[';
	k += sprintf(text + k, "\\\"[[\\\\\"}]}");
	rc = listing_parse(text, (size_t)k, &page, err, sizeof(err));
	tap_is_int(rc, 0, "brackets and escaped quotes inside a string");
	listing_free(&page);

	cJSON *json;

	body = nested(LISTING_MAX_DEPTH, 0, &n);
	json = listing_parse_json(body, n, err, sizeof(err));
	tap_ok(json != NULL, "parse json: depth %d accepted",
	       LISTING_MAX_DEPTH);
	cJSON_Delete(json);
	free(body);
	body = nested(LISTING_MAX_DEPTH + 1, 0, &n);
	json = listing_parse_json(body, n, err, sizeof(err));
	tap_ok(json == NULL && err[0], "parse json: depth %d refused",
	       LISTING_MAX_DEPTH + 1);
	cJSON_Delete(json);
	free(body);
	json = listing_parse_json("{\"a\":1}", 7, NULL, 0);
	tap_ok(cJSON_IsObject(json), "parse json: an object, no err buffer");
	cJSON_Delete(json);
	json = listing_parse_json("", 0, NULL, 0);
	tap_ok(json == NULL, "parse json: empty body gives NULL");
}

static cJSON *item(const char *text)
{
	cJSON *j = cJSON_Parse(text);

	if (!j) {
		tap_diag("cannot parse test item %s", text);
		abort();
	}
	return j;
}

static void test_item_id(void)
{
	static const struct {
		const char *item;
		int rc;
		uint64_t id;
	} cases[] = {
	    {"{\"id\":42}", 0, 42},
	    {"{\"id\":1}", 0, 1},
	    {"{\"id\":42.0}", 0, 42},
	    {"{\"id\":4.2e1}", 0, 42},
	    {"{\"name\":\"x\",\"id\":7}", 0, 7},
	    {"{\"id\":9007199254740991}", 0, 9007199254740991ULL},
	    {"{\"id\":42.5}", -1, 0},
	    {"{\"id\":0}", -1, 0},
	    {"{\"id\":-1}", -1, 0},
	    {"{\"id\":-0}", -1, 0},
	    {"{\"id\":0.5}", -1, 0},
	    {"{\"id\":\"42\"}", -1, 0},
	    {"{\"id\":null}", -1, 0},
	    {"{\"id\":true}", -1, 0},
	    {"{\"id\":[42]}", -1, 0},
	    {"{\"id\":{\"id\":42}}", -1, 0},
	    {"{\"ID\":42}", -1, 0},
	    {"{}", -1, 0},
	    {"{\"id\":1e300}", -1, 0},
	    {"{\"id\":1e400}", -1, 0},
	    {"{\"id\":18446744073709551616}", -1, 0},
	    /* 2^53 and 2^53+1 are the same double: neither is exact. */
	    {"{\"id\":9007199254740992}", -1, 0},
	    {"{\"id\":9007199254740993}", -1, 0},
	    {"[42]", -1, 0},
	    {"42", -1, 0},
	    {"\"id\"", -1, 0},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cJSON *j = item(cases[i].item);
		uint64_t id = 0;
		int rc = listing_item_id(j, &id);

		if (tap_is_int(rc, cases[i].rc, "item id of %s: %s",
			       cases[i].item, cases[i].rc ? "-1" : "0") &&
		    rc == 0)
			tap_is_u64(id, cases[i].id, "item id of %s: value",
				   cases[i].item);
		if (rc == 0 && cases[i].rc != 0)
			tap_diag("id read as %llu", (unsigned long long)id);
		cJSON_Delete(j);
	}

	uint64_t id = 0;

	tap_is_int(listing_item_id(NULL, &id), -1, "item id of NULL: -1");
}

static void test_item_name(void)
{
	static const struct {
		const char *item, *name;
	} cases[] = {
	    {"{\"id\":1,\"name\":\"Signed up\"}", "Signed up"},
	    {"{\"name\":\"\"}", ""},
	    {"{\"name\":\"Регистрация\"}", "Регистрация"},
	    {"{\"name\":\"a/../b\"}", "a/../b"},
	    {"{\"name\":null}", NULL},
	    {"{\"name\":42}", NULL},
	    {"{\"name\":[\"x\"]}", NULL},
	    {"{\"name\":{\"en\":\"x\"}}", NULL},
	    {"{\"Name\":\"x\"}", NULL},
	    {"{}", NULL},
	    {"[\"name\"]", NULL},
	    {"\"name\"", NULL},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cJSON *j = item(cases[i].item);

		tap_is_str(listing_item_name(j), cases[i].name,
			   "item name of %s", cases[i].item);
		cJSON_Delete(j);
	}
	tap_ok(listing_item_name(NULL) == NULL, "item name of NULL: NULL");
}

static void reason_is(const char *body, long status, const char *expected,
		      const char *why)
{
	char out[512], *copy = exact(body, strlen(body));

	memset(out, 'X', sizeof(out));
	listing_error_reason(copy, strlen(body), status, out, sizeof(out));
	free(copy);
	tap_is_str(out, expected, "reason: %s", why);
}

/*
 * Why the reason for @body is not one line of valid UTF-8 within
 * @outlen bytes, or NULL. @out receives the reason.
 */
static const char *reason_problem(const char *body, long status, size_t outlen,
				  char *out, size_t *len)
{
	char *copy = exact(body, strlen(body));

	memset(out, 'X', outlen);
	listing_error_reason(copy, strlen(body), status, out, outlen);
	free(copy);
	*len = strnlen(out, outlen);
	if (*len >= outlen)
		return "not terminated within outlen";
	if (tap_utf8_bad(out, *len) >= 0)
		return "invalid UTF-8";
	if (tap_control_at(out, *len) >= 0)
		return "a control character";
	return NULL;
}

static void reason_clean(const char *body, long status, size_t outlen,
			 const char *why)
{
	char out[1024];
	size_t len;
	const char *problem = reason_problem(body, status, outlen, out, &len);

	if (!tap_ok(!problem, "reason: %s: one line of valid UTF-8", why)) {
		tap_diag("%s", problem);
		tap_diag_bytes("reason", out, len);
	}
}

static void test_error_reason(void)
{
	reason_is("{\"type\":\"validation_error\",\"code\":\"unique\","
		  "\"detail\":\"This project already has an action with this "
		  "name, ID 12\",\"attr\":\"name\"}",
		  400,
		  "This project already has an action with this name, ID 12 "
		  "(attr name)",
		  "validation error with attr");
	reason_is(
	    "{\"type\":\"validation_error\",\"code\":\"invalid_choice\","
	    "\"detail\":\"\\\"foo\\\" is not a valid choice.\","
	    "\"attr\":\"steps__0__url_matching\"}",
	    400, "\"foo\" is not a valid choice. (attr steps__0__url_matching)",
	    "nested attr");
	reason_is("{\"type\":\"authentication_error\",\"code\":"
		  "\"not_authenticated\",\"detail\":\"Authentication "
		  "credentials were not provided.\",\"attr\":null}",
		  401, "Authentication credentials were not provided.",
		  "attr null");
	reason_is("{\"detail\":\"Not found.\"}", 404, "Not found.",
		  "attr absent");
	reason_is("{\"type\":\"throttled_error\",\"detail\":\"Request was "
		  "throttled.\",\"attr\":7}",
		  429, "Request was throttled.", "attr not a string");
	reason_is("{\"detail\":\"line1\\nline2\\ttab\\u001b[31mred\\u007f\","
		  "\"attr\":\"na\\rme\"}",
		  400, "line1?line2?tab?[31mred? (attr na?me)",
		  "control characters in detail and attr become '?'");

	static const struct {
		const char *body;
		long status;
		const char *what;
	} generic[] = {
	    {"<html><body><h1>502 Bad Gateway</h1></body></html>", 502,
	     "an HTML 502 page"},
	    {"", 503, "an empty 503"},
	    {"Internal Server Error", 500, "a text 500"},
	    {"[\"detail\"]", 500, "a JSON array"},
	    {"{\"error\":\"x\"}", 404, "an object without detail"},
	    {"{\"detail\":5}", 400, "detail not a string"},
	    {"{\"detail\":\"cut", 400, "a cut error body"},
	    {"\"detail\"", 418, "a JSON string, unknown status"},
	};

	for (size_t i = 0; i < sizeof(generic) / sizeof(generic[0]); i++) {
		char out[256], prefix[32];

		memset(out, 'X', sizeof(out));
		listing_error_reason(generic[i].body, strlen(generic[i].body),
				     generic[i].status, out, sizeof(out));
		snprintf(prefix, sizeof(prefix), "HTTP %ld", generic[i].status);
		tap_ok(strncmp(out, prefix, strlen(prefix)) == 0 &&
			   !strchr(out, '<') && !strchr(out, '\n'),
		       "reason: %s: \"%s ...\"", generic[i].what, prefix);
		if (strncmp(out, prefix, strlen(prefix)) != 0 ||
		    strchr(out, '<') || strchr(out, '\n'))
			tap_diag_bytes("got", out, strnlen(out, sizeof(out)));
	}

	char out[64];

	listing_error_reason(NULL, 0, 500, out, sizeof(out));
	tap_ok(strncmp(out, "HTTP 500", 8) == 0, "reason: NULL body");

	size_t n;
	char *bomb = nested(100000, 0, &n);

	listing_error_reason(bomb, n, 400, out, sizeof(out));
	tap_ok(strncmp(out, "HTTP 400", 8) == 0, "reason: a depth bomb");
	free(bomb);
}

/* Never a byte past @outlen, whatever fits. */
static void test_error_reason_bounds(void)
{
	static const char body[] =
	    "{\"detail\":\"This project already has an action with this "
	    "name, ID 12\",\"attr\":\"steps__0__url_matching\"}";
	char *copy = exact(body, strlen(body));
	int overflow = 0, unterminated = 0;
	size_t at = 0;

	for (size_t outlen = 1; outlen <= 160; outlen++) {
		char out[200];

		memset(out, 'X', sizeof(out));
		listing_error_reason(copy, strlen(body), 400, out, outlen);
		for (size_t k = outlen; k < sizeof(out); k++)
			if (out[k] != 'X' && !overflow) {
				overflow = 1;
				at = outlen;
			}
		if (!memchr(out, '\0', outlen) && !unterminated) {
			unterminated = 1;
			at = outlen;
		}
	}
	free(copy);
	tap_ok(!overflow, "reason: nothing written past outlen 1..160");
	tap_ok(!unterminated, "reason: always terminated within outlen");
	if (overflow || unterminated)
		tap_diag("first failure at outlen %zu", at);

	char none[1] = {'X'};

	listing_error_reason(body, strlen(body), 400, none, 0);
	tap_ok(none[0] == 'X', "reason: outlen 0 writes nothing");
}

/* Builds {"detail":"<@unit x times>","attr":"name"} for UTF-8 cuts. */
static char *detail_body(const char *prefix, const char *unit, int times)
{
	size_t cap = strlen(prefix) + strlen(unit) * (size_t)times + 64;
	char *s = malloc(cap), *p;

	if (!s)
		abort();
	p = s + sprintf(s, "{\"detail\":\"%s", prefix);
	for (int i = 0; i < times; i++)
		p += sprintf(p, "%s", unit);
	sprintf(p, "\",\"attr\":\"name\"}");
	return s;
}

static void test_error_reason_clean(void)
{
	const char *problem = NULL;
	char *body, out[1024];
	size_t len = 0, outlen;

	reason_clean("{\"detail\":\"a\\u0085b\\u009b31mc\"}", 400, 256,
		     "C1 controls U+0085 and U+009B");
	reason_clean("{\"detail\":\"déjà vu — 登\"}", 400, 256,
		     "non-ASCII text");

	body = detail_body("a", "é", 400);
	reason_clean(body, 400, sizeof(out), "a 2-byte character at the cut");
	free(body);
	body = detail_body("ab", "登", 400);
	reason_clean(body, 400, sizeof(out), "a 3-byte character at the cut");
	free(body);

	body = detail_body("", "é", 20);
	for (outlen = 2; outlen <= 64 && !problem; outlen++)
		problem = reason_problem(body, 400, outlen, out, &len);
	if (!tap_ok(!problem,
		    "reason: a small outlen never splits a character")) {
		tap_diag("outlen %zu: %s", outlen - 1, problem);
		tap_diag_bytes("reason", out, len);
	}
	free(body);
}

int main(int argc, char **argv)
{
	(void)argc;
	tap_start(argv[0]);
	test_shapes();
	test_count_and_next();
	test_refused();
	test_depth();
	test_item_id();
	test_item_name();
	test_error_reason();
	test_error_reason_bounds();
	test_error_reason_clean();
	return tap_done();
}
