/*
 * Unit tests of action.c: a file's text must be what `jq .` (jq 1.6)
 * prints for the same JSON, byte for byte.
 *
 * Expected bytes are written out here; when jq is installed, a set of
 * tricky and generated documents is also compared with jq's own output.
 */
#include "action.h"

#include "tap.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Parses @text and renders it; NULL when either step fails. */
static char *render_text(const char *text, size_t tlen, size_t *len)
{
	cJSON *json = cJSON_ParseWithLength(text, tlen);
	char *out;

	if (!json)
		return NULL;
	out = action_render(json, len);
	cJSON_Delete(json);
	return out;
}

static void render_is(const char *text, const char *expected, const char *why)
{
	size_t len = 0;
	char *out = render_text(text, strlen(text), &len);

	if (!out)
		tap_diag_bytes("input", text, strlen(text));
	tap_is_mem(out, len, expected, strlen(expected), "render: %s", why);
	free(out);
}

static void render_node_is(const cJSON *json, const char *expected,
			   const char *why)
{
	size_t len = 0;
	char *out = action_render(json, &len);

	tap_is_mem(out, len, expected, strlen(expected), "render: %s", why);
	free(out);
}

static void test_scalars_and_empties(void)
{
	render_is("null", "null\n", "null");
	render_is("true", "true\n", "true");
	render_is("false", "false\n", "false");
	render_is("42", "42\n", "a number");
	render_is("\"x\"", "\"x\"\n", "a string");
	render_is("{}", "{}\n", "an empty object");
	render_is("[]", "[]\n", "an empty array");
	render_is(" { } ", "{}\n", "an empty object with spaces");
	render_is("[\n]", "[]\n", "an empty array with a newline");
}

static void test_structure(void)
{
	render_is("{\"a\":1,\"b\":[1,2],\"c\":{}}",
		  "{\n"
		  "  \"a\": 1,\n"
		  "  \"b\": [\n"
		  "    1,\n"
		  "    2\n"
		  "  ],\n"
		  "  \"c\": {}\n"
		  "}\n",
		  "object with an array and an empty object");
	render_is("[[],{},[[]],{\"a\":{}},[{}]]",
		  "[\n"
		  "  [],\n"
		  "  {},\n"
		  "  [\n"
		  "    []\n"
		  "  ],\n"
		  "  {\n"
		  "    \"a\": {}\n"
		  "  },\n"
		  "  [\n"
		  "    {}\n"
		  "  ]\n"
		  "]\n",
		  "nested empties");
	render_is("{\"z\":1,\"a\":2,\"m\":3,\"b\":4}",
		  "{\n  \"z\": 1,\n  \"a\": 2,\n  \"m\": 3,\n  \"b\": 4\n}\n",
		  "keys keep the server's order");
	render_is("[null,true,false,\"\",0]",
		  "[\n  null,\n  true,\n  false,\n  \"\",\n  0\n]\n",
		  "every scalar in an array");
	render_is("{\"\":\"\"}", "{\n  \"\": \"\"\n}\n", "empty key");
	render_is("{\"a\" : [ 1 , { \"b\" : null } ] }",
		  "{\n"
		  "  \"a\": [\n"
		  "    1,\n"
		  "    {\n"
		  "      \"b\": null\n"
		  "    }\n"
		  "  ]\n"
		  "}\n",
		  "spacing of the input does not matter");
}

static void test_action_document(void)
{
	static const char text[] =
	    "{\"id\":42,\"name\":\"Signed up\",\"description\":\"\","
	    "\"tags\":[],\"post_to_slack\":false,"
	    "\"slack_message_format\":\"\",\"steps\":[{\"event\":"
	    "\"$pageview\",\"properties\":[{\"key\":\"$browser\","
	    "\"value\":[\"Chrome\"],\"operator\":\"exact\",\"type\":"
	    "\"person\"}],\"selector\":null,\"tag_name\":null,\"text\":"
	    "null,\"text_matching\":null,\"href\":null,\"href_matching\":"
	    "null,\"url\":\"https://example.com/signup/\",\"url_matching\":"
	    "\"contains\"}],\"created_at\":"
	    "\"2024-03-01T12:00:00.123456Z\",\"created_by\":{\"id\":1,"
	    "\"uuid\":\"0189c0b3-0000-0000-0000-000000000000\","
	    "\"first_name\":\"Ада\",\"email\":\"ada@example.com\"},"
	    "\"deleted\":false,\"is_calculating\":false,"
	    "\"last_calculated_at\":\"2024-03-01T12:00:00Z\",\"team_id\":"
	    "12345,\"is_action\":true,\"bytecode_error\":null,"
	    "\"pinned_at\":null,\"creation_context\":null,"
	    "\"user_access_level\":\"editor\"}";
	static const char expected[] =
	    "{\n"
	    "  \"id\": 42,\n"
	    "  \"name\": \"Signed up\",\n"
	    "  \"description\": \"\",\n"
	    "  \"tags\": [],\n"
	    "  \"post_to_slack\": false,\n"
	    "  \"slack_message_format\": \"\",\n"
	    "  \"steps\": [\n"
	    "    {\n"
	    "      \"event\": \"$pageview\",\n"
	    "      \"properties\": [\n"
	    "        {\n"
	    "          \"key\": \"$browser\",\n"
	    "          \"value\": [\n"
	    "            \"Chrome\"\n"
	    "          ],\n"
	    "          \"operator\": \"exact\",\n"
	    "          \"type\": \"person\"\n"
	    "        }\n"
	    "      ],\n"
	    "      \"selector\": null,\n"
	    "      \"tag_name\": null,\n"
	    "      \"text\": null,\n"
	    "      \"text_matching\": null,\n"
	    "      \"href\": null,\n"
	    "      \"href_matching\": null,\n"
	    "      \"url\": \"https://example.com/signup/\",\n"
	    "      \"url_matching\": \"contains\"\n"
	    "    }\n"
	    "  ],\n"
	    "  \"created_at\": \"2024-03-01T12:00:00.123456Z\",\n"
	    "  \"created_by\": {\n"
	    "    \"id\": 1,\n"
	    "    \"uuid\": \"0189c0b3-0000-0000-0000-000000000000\",\n"
	    "    \"first_name\": \"Ада\",\n"
	    "    \"email\": \"ada@example.com\"\n"
	    "  },\n"
	    "  \"deleted\": false,\n"
	    "  \"is_calculating\": false,\n"
	    "  \"last_calculated_at\": \"2024-03-01T12:00:00Z\",\n"
	    "  \"team_id\": 12345,\n"
	    "  \"is_action\": true,\n"
	    "  \"bytecode_error\": null,\n"
	    "  \"pinned_at\": null,\n"
	    "  \"creation_context\": null,\n"
	    "  \"user_access_level\": \"editor\"\n"
	    "}\n";

	render_is(text, expected, "a whole PostHog action");
}

static void test_duplicate_keys(void)
{
	render_is("{\"a\":1,\"b\":2,\"a\":3}",
		  "{\n  \"a\": 3,\n  \"b\": 2\n}\n",
		  "duplicate key: first position, last value");
	render_is("{\"k\":1,\"k\":2,\"k\":3}", "{\n  \"k\": 3\n}\n",
		  "a key three times");
	render_is("{\"a\":{\"x\":1},\"b\":0,\"a\":[2]}",
		  "{\n  \"a\": [\n    2\n  ],\n  \"b\": 0\n}\n",
		  "duplicate key whose values differ in type");
	render_is("{\"o\":{\"p\":1,\"q\":2,\"p\":3}}",
		  "{\n  \"o\": {\n    \"p\": 3,\n    \"q\": 2\n  }\n}\n",
		  "duplicate key in a nested object");
	render_is("[{\"a\":1},{\"a\":2}]",
		  "[\n  {\n    \"a\": 1\n  },\n  {\n    \"a\": 2\n  }\n]\n",
		  "the same key in two objects is no duplicate");
	render_is("{\"\\u00e9\":1,\"é\":2}", "{\n  \"é\": 2\n}\n",
		  "an escaped and a raw spelling of one key");

	/* jq reads bad bytes as U+FFFD first, so these two keys are one. */
	render_is("{\"\xff\":1,\"\xfe\":2}", "{\n  \"\xef\xbf\xbd\": 2\n}\n",
		  "keys that differ only in invalid bytes are one key");
}

/* Objects of any size, not only small ones, keep jq's rule. */
static void test_duplicate_keys_large(void)
{
	enum { MEMBERS = 600 };
	size_t cap = 64 + MEMBERS * 32, tl = 0, el = 0, len = 0;
	char *text = malloc(cap), *exp = malloc(cap), *out;

	if (!text || !exp)
		abort();
	tl += (size_t)sprintf(text + tl, "{\"dup\":0");
	el += (size_t)sprintf(exp + el, "{\n  \"dup\": %d", MEMBERS);
	for (int i = 1; i < MEMBERS; i++) {
		tl += (size_t)sprintf(text + tl, ",\"k%d\":%d", i, i);
		el += (size_t)sprintf(exp + el, ",\n  \"k%d\": %d", i, i);
	}
	tl += (size_t)sprintf(text + tl, ",\"dup\":%d}", MEMBERS);
	el += (size_t)sprintf(exp + el, "\n}\n");
	out = render_text(text, tl, &len);
	tap_is_mem(out, len, exp, el,
		   "render: duplicate key in an object of %d members",
		   MEMBERS + 1);
	free(out);
	free(text);
	free(exp);
}

static void test_strings(void)
{
	render_is("\"\\\" \\\\ \\b \\f \\n \\r \\t\"",
		  "\"\\\" \\\\ \\b \\f \\n \\r \\t\"\n", "the short escapes");
	render_is("\"\\u0001\\u0002\\u001b\\u001f\\u007f\"",
		  "\"\\u0001\\u0002\\u001b\\u001f\\u007f\"\n",
		  "controls and DEL as \\u00XX in lowercase hex");
	render_is("\"\\u000b\\u000B\"", "\"\\u000b\\u000b\"\n",
		  "vertical tab in lowercase hex");
	render_is("\"a/b \\/ </script>\"", "\"a/b / </script>\"\n",
		  "'/' is not escaped, '\\/' comes out as '/'");
	render_is("\"é я 登 😀\"", "\"é я 登 😀\"\n", "non-ASCII raw");
	render_is("\"\\u00e9 \\u044f \\u767b \\ud83d\\ude00\"",
		  "\"é я 登 😀\"\n", "escaped non-ASCII written raw");
	render_is("\"\\u0080\\u009f\\u00a0\\u2028\\u2029\\ufeff\\uffff\"",
		  "\"\xc2\x80\xc2\x9f\xc2\xa0\xe2\x80\xa8\xe2\x80\xa9"
		  "\xef\xbb\xbf\xef\xbf\xbf\"\n",
		  "C1 controls, U+2028, BOM and U+FFFF raw, as jq does");
	render_is("{\"a\\nb\":\"\\\"\"}", "{\n  \"a\\nb\": \"\\\"\"\n}\n",
		  "keys are escaped like values");
	render_is("\"\x7f\"", "\"\\u007f\"\n", "a raw DEL");
	render_is("\"a\tb\"", "\"a\\tb\"\n", "a raw tab");
}

static void string_is(const char *raw, const char *expected, const char *why)
{
	cJSON *s = cJSON_CreateString(raw);

	if (!s)
		abort();
	render_node_is(s, expected, why);
	cJSON_Delete(s);
}

#define FFFD "\xef\xbf\xbd"

/* jq 1.6's reading of bad UTF-8 (jvp_utf8_next), one case at a time. */
static void test_invalid_utf8(void)
{
	string_is("a\xffz", "\"a" FFFD "z\"\n", "0xFF is one U+FFFD");
	string_is("a\x80\x80z", "\"a" FFFD FFFD "z\"\n",
		  "each stray continuation byte is one U+FFFD");
	string_is("\xc0\x80", "\"" FFFD FFFD "\"\n",
		  "C0 80: C0 is never a lead byte, then a stray 80");
	string_is("\xc1\xbf", "\"" FFFD FFFD "\"\n", "C1 BF likewise");
	string_is("\xf5\x80\x80\x80", "\"" FFFD FFFD FFFD FFFD "\"\n",
		  "F5 is never a lead byte");
	string_is("\xe0\x80\xaf", "\"" FFFD "\"\n",
		  "3-byte overlong '/' is one U+FFFD");
	string_is("\xf0\x80\x80\xaf", "\"" FFFD "\"\n",
		  "4-byte overlong '/' is one U+FFFD");
	string_is("x\xed\xa0\x80y", "\"x" FFFD "y\"\n",
		  "an encoded surrogate is one U+FFFD");
	string_is("\xed\xa0\xbd\xed\xb8\x80", "\"" FFFD FFFD "\"\n",
		  "CESU-8 pair is two U+FFFD");
	string_is("\xf4\x90\x80\x80", "\"" FFFD "\"\n",
		  "beyond U+10FFFF is one U+FFFD");
	string_is("\xe2\x82q", "\"" FFFD "q\"\n",
		  "a sequence cut by an ASCII byte: one U+FFFD, then the byte");
	string_is("\xf0\x9f\x98\xc3\xa9", "\"" FFFD "é\"\n",
		  "a sequence cut by a new lead byte");
	string_is("e\xe2\x82", "\"e" FFFD "\"\n",
		  "a sequence cut by the end is one U+FFFD");
	string_is("e\xf0\x9f", "\"e" FFFD "\"\n",
		  "two bytes of a four-byte sequence at the end");
	string_is("\xc3\xa9\xc3", "\"é" FFFD "\"\n",
		  "a valid character then a cut one");
	string_is("caf\xe9 ok", "\"caf" FFFD " ok\"\n", "Latin-1 text");
	string_is("\xef\xbf\xbd", "\"" FFFD "\"\n", "a real U+FFFD stays");
	string_is("\xf4\x8f\xbf\xbf", "\"\xf4\x8f\xbf\xbf\"\n",
		  "U+10FFFF stays");
	string_is("\xe2\x82\"", "\"" FFFD "\\\"\"\n",
		  "a cut sequence before a quote keeps the quote escaped");
	string_is("\xe2\nxyz", "\"" FFFD "\\nxyz\"\n",
		  "a cut sequence before a newline keeps the newline");
	string_is(
	    "\xe2\n", "\"" FFFD "\"\n",
	    "a lead byte wanting more bytes than are left takes them all");
}

struct number_case {
	double d;
	const char *text;
};

static void test_numbers(void)
{
	static const struct number_case cases[] = {
	    {1, "1"},
	    {1.0, "1"},
	    {0, "0"},
	    {-0.0, "-0"},
	    {-42, "-42"},
	    {100, "100"},
	    {1.5, "1.5"},
	    {0.1, "0.1"},
	    {0.1 + 0.2, "0.30000000000000004"},
	    {3.14159, "3.14159"},
	    {123.456, "123.456"},
	    {1234567.0, "1234567"},
	    {0.001, "0.001"},
	    {0.0001, "0.0001"},
	    {0.00012, "0.00012"},
	    {2.5e-3, "0.0025"},
	    {1e-5, "1e-05"},
	    {-1.5e-7, "-1.5e-07"},
	    {1.2345e-300, "1.2345e-300"},
	    {1e15, "1000000000000000"},
	    {1e16, "1e+16"},
	    {1e17, "1e+17"},
	    {12e15, "12000000000000000"},
	    {123456789012345678.0, "123456789012345680"},
	    {9007199254740993.0, "9007199254740992"},
	    {1e21, "1e+21"},
	    {1e100, "1e+100"},
	    {1.7976931348623157e308, "1.7976931348623157e+308"},
	    {INFINITY, "1.7976931348623157e+308"},
	    {-INFINITY, "-1.7976931348623157e+308"},
	    {5e-324, "5e-324"},
	    {-1.2345678901234567e31, "-12345678901234567000000000000000"},
	    {NAN, "null"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[ACTION_NUMBER_MAX];

		action_format_number(cases[i].d, out);
		tap_is_str(out, cases[i].text, "number %.17g prints as %s",
			   cases[i].d, cases[i].text);
	}

	render_is("[1.0,1e15,1e16,12e15,123456789012345678,0.0001,1e-5,"
		  "-1.5e-7,1e100,1e400,-1e400,5e-324,-0,1E2,0.5e1]",
		  "[\n  1,\n  1000000000000000,\n  1e+16,\n"
		  "  12000000000000000,\n  123456789012345680,\n  0.0001,\n"
		  "  1e-05,\n  -1.5e-07,\n  1e+100,\n"
		  "  1.7976931348623157e+308,\n"
		  "  -1.7976931348623157e+308,\n  5e-324,\n  -0,\n  100,\n"
		  "  5\n]\n",
		  "numbers read from text");
}

/* No number needs more than ACTION_NUMBER_MAX bytes with its NUL. */
static void test_number_buffer(void)
{
	enum { ROUNDS = 20000, ROOM = ACTION_NUMBER_MAX };
	unsigned char buf[ROOM + 32];
	double worst = 0;
	size_t longest = 0;

	for (int i = 0; i < ROUNDS; i++) {
		uint64_t bits = tap_rand();
		double d;
		size_t len;

		if (i < 64) {
			/* 17 significant digits just below the switch to
			 * an exponent are the longest plain numbers. */
			d = (i & 1 ? -1 : 1) * 1.2345678901234567 *
			    pow(10, i / 2);
		} else {
			memcpy(&d, &bits, sizeof(d));
		}
		memset(buf, 0xAA, sizeof(buf));
		action_format_number(d, (char *)buf);
		len = strnlen((char *)buf, sizeof(buf)) + 1;
		if (len > longest) {
			longest = len;
			worst = d;
		}
	}
	if (!tap_ok(longest <= ROOM,
		    "number: never more than %d bytes with the NUL", ROOM))
		tap_diag("%.17g takes %zu bytes with its NUL", worst, longest);
}

static void test_trailing_newline(void)
{
	static const char *const docs[] = {"0",	 "\"\"",   "[]",
					   "{}", "[[[]]]", "{\"a\":\"\\n\"}"};

	for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
		size_t len = 0;
		char *out = render_text(docs[i], strlen(docs[i]), &len);

		tap_ok(out && len >= 2 && out[len - 1] == '\n' &&
			   out[len - 2] != '\n' &&
			   memchr(out, '\0', len) == NULL,
		       "render: '%s' ends in exactly one newline, no NUL",
		       docs[i]);
		free(out);
	}
}

/* @levels arrays, each holding the next one; the last holds @leaf. */
static cJSON *nested_arrays(int levels, cJSON *leaf)
{
	cJSON *node = leaf;

	for (int i = 0; i < levels; i++) {
		cJSON *arr = cJSON_CreateArray();

		if (!arr)
			abort();
		if (node)
			cJSON_AddItemToArray(arr, node);
		node = arr;
	}
	return node;
}

/* What jq prints for nested_arrays(levels, 1). */
static char *nested_text(int levels)
{
	size_t cap = (size_t)levels * ((size_t)levels * 4 + 8) + 64, n = 0;
	char *s = malloc(cap);

	if (!s)
		abort();
	for (int i = 0; i < levels; i++)
		n += (size_t)sprintf(s + n, "%*s[\n", i * 2, "");
	n += (size_t)sprintf(s + n, "%*s1\n", levels * 2, "");
	for (int i = levels - 1; i >= 0; i--)
		n += (size_t)sprintf(s + n, "%*s]\n", i * 2, "");
	return s;
}

static void test_depth(void)
{
	size_t len = 0;
	cJSON *ok20 = nested_arrays(20, cJSON_CreateNumber(1));
	cJSON *ok256 = nested_arrays(256, cJSON_CreateNumber(1));
	cJSON *max = nested_arrays(ACTION_MAX_DEPTH, NULL);
	cJSON *deep = nested_arrays(ACTION_MAX_DEPTH + 100, NULL);
	cJSON *deep_obj = cJSON_CreateNumber(1);
	char *exp, *out;

	exp = nested_text(20);
	render_node_is(ok20, exp, "20 levels, indented 40 spaces deep");
	free(exp);
	exp = nested_text(256);
	render_node_is(ok256, exp, "256 levels (jq 1.6's own limit)");
	free(exp);

	out = action_render(max, &len);
	tap_ok(out != NULL, "render: %d nested arrays render",
	       ACTION_MAX_DEPTH);
	free(out);
	out = action_render(deep, &len);
	tap_ok(out == NULL, "render: %d nested arrays give NULL",
	       ACTION_MAX_DEPTH + 100);
	free(out);

	for (int i = 0; i < ACTION_MAX_DEPTH + 100; i++) {
		cJSON *obj = cJSON_CreateObject();

		if (!obj)
			abort();
		cJSON_AddItemToObject(obj, "k", deep_obj);
		deep_obj = obj;
	}
	out = action_render(deep_obj, &len);
	tap_ok(out == NULL, "render: %d nested objects give NULL",
	       ACTION_MAX_DEPTH + 100);
	free(out);

	tap_ok(action_render(NULL, &len) == NULL, "render: NULL gives NULL");

	cJSON_Delete(ok20);
	cJSON_Delete(ok256);
	cJSON_Delete(max);
	cJSON_Delete(deep);
	cJSON_Delete(deep_obj);
}

/* ---- comparison with jq itself ---- */

static int have_jq(void)
{
	return system("command -v jq >/dev/null 2>&1") == 0;
}

/*
 * Writes @doc to a temporary file and reads `jq . FILE`. Returns jq's
 * output (malloc'ed) or NULL; *path keeps the file's name.
 */
static char *jq_render(const char *doc, size_t dlen, char *path, size_t *len)
{
	char cmd[128], *out = NULL;
	size_t cap = 0, n = 0;
	int fd;
	FILE *p;

	snprintf(path, 64, "%s/phfs-test-jq-XXXXXX", P_tmpdir);
	fd = mkstemp(path);
	if (fd < 0)
		return NULL;
	if (write(fd, doc, dlen) != (ssize_t)dlen) {
		close(fd);
		return NULL;
	}
	close(fd);
	snprintf(cmd, sizeof(cmd), "jq . '%s' 2>/dev/null", path);
	p = popen(cmd, "r");
	if (!p)
		return NULL;
	for (;;) {
		size_t got;

		if (n + 4096 > cap) {
			char *q = realloc(out, cap = cap * 2 + 8192);

			if (!q)
				abort();
			out = q;
		}
		got = fread(out + n, 1, cap - n, p);
		if (!got)
			break;
		n += got;
	}
	if (pclose(p) != 0) {
		free(out);
		return NULL;
	}
	*len = n;
	return out;
}

/* Returns 1 when action_render agrees with jq on @doc. */
static int agrees_with_jq(const char *doc, size_t dlen, const char *what)
{
	char path[64];
	size_t jlen = 0, mlen = 0;
	char *theirs = jq_render(doc, dlen, path, &jlen);
	char *mine = render_text(doc, dlen, &mlen);
	int same =
	    theirs && mine && jlen == mlen && memcmp(theirs, mine, jlen) == 0;

	if (!same) {
		tap_diag("%s: differs from jq; see: jq . %s", what, path);
		tap_is_mem(mine, mlen, theirs, jlen, "%s: as jq renders it",
			   what);
		/* The file stays for the person reading the failure. */
	} else {
		unlink(path);
	}
	free(theirs);
	free(mine);
	return same;
}

static const char *const tricky[] = {
    "{\"id\":42,\"name\":\"Signed up\",\"steps\":[{\"url\":"
    "\"https://x.io/a?b=c&d=/e\",\"properties\":[]}],\"tags\":[]}",
    "[1.0,1e15,1e16,1e17,12e15,123456789012345678,0.1,0.0001,1e-5,"
    "-1.5e-7,1e100,1.7976931348623157e308,1e400,-1e400,5e-324,1e-400,"
    "-0,-0.0,3.14159,0.30000000000000004,100000000000000000000000,"
    "1.2345678901234567e31,-1.2345678901234567e31,9007199254740993]",
    "{\"a\":1,\"b\":2,\"a\":3}",
    "{\"k\":{\"x\":1},\"k\":[1,2],\"j\":null,\"k\":\"last\"}",
    "\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u0001 \\u001f \\u007f "
    "\\u0080 \\u00e9 \\u2028 \\ud83d\\ude00 \\uffff\"",
    "\"raw: é я 登 😀 \xef\xbf\xbd\"",
    "\"bad: a\xffz\x80\xc0\x80\xe0\x80\xaf\xed\xa0\x80\xf4\x90\x80"
    "\x80\xe2\x82q\xf5\xf0\x9f\x98\xc3\xa9 end\xe2\x82\"",
    "[\"\xe2\x82\\\"\", \"\xe2\\n\", \"x\xf0\x9f\"]",
    "[[],{},[[]],{\"a\":{}},[{}],\"\",{\"\":\"\"}]",
    "  {\n\t\"spaced\" :\r\n [ 1 ,2 ] }  \n",
    "{\"\\u00e9\":1,\"é\":2}",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    "[true,false,null,0,-1,\"x\"]",
};

/* One random JSON value as text, in the subset both parsers read alike. */
static void gen_value(char *buf, size_t *n, size_t cap, int depth);

static void gen_string(char *buf, size_t *n, size_t cap, int with_bad)
{
	static const char *const pieces[] = {
	    "a",
	    "Z",
	    " ",
	    "/",
	    "'",
	    "<b>",
	    "\\\"",
	    "\\\\",
	    "\\/",
	    "\\b",
	    "\\f",
	    "\\n",
	    "\\r",
	    "\\t",
	    "\\u0001",
	    "\\u001f",
	    "\\u007f",
	    "\\u0080",
	    "\\u00e9",
	    "\\u2028",
	    "\\ufeff",
	    "\\ud83d\\ude00",
	    "é",
	    "я",
	    "登",
	    "😀",
	    "\xef\xbf\xbd",
	};
	static const char *const bad[] = {
	    "\xff",	    "\x80",	    "\xc0\x80",
	    "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
	    "\xe2\x82",	    "\xf0\x9f\x98", "\xc3",
	    "\xf5",	    "\xfe\xfe",
	};
	int count = (int)tap_below(8);

	buf[(*n)++] = '"';
	for (int i = 0; i < count && *n + 32 < cap; i++) {
		const char *p;

		if (with_bad && tap_below(4) == 0)
			p = bad[tap_below(sizeof(bad) / sizeof(bad[0]))];
		else
			p = pieces[tap_below(sizeof(pieces) /
					     sizeof(pieces[0]))];
		*n += (size_t)snprintf(buf + *n, cap - *n, "%s", p);
	}
	buf[(*n)++] = '"';
}

static void gen_number(char *buf, size_t *n, size_t cap)
{
	static const char *const fixed[] = {
	    "0",
	    "-0",
	    "0.0",
	    "1e400",
	    "-1e400",
	    "1e-400",
	    "1E5",
	    "1e+5",
	    "12.500",
	    "5e-324",
	    "1e16",
	    "1e15",
	    "123456789012345678901234567890",
	    "0.000001",
	    "-7e-5",
	};
	uint64_t bits = tap_rand();
	double d;

	switch (tap_below(4)) {
	case 0:
		*n += (size_t)snprintf(
		    buf + *n, cap - *n, "%s",
		    fixed[tap_below(sizeof(fixed) / sizeof(fixed[0]))]);
		break;
	case 1:
		*n += (size_t)snprintf(
		    buf + *n, cap - *n, "%s%llu", bits & 1 ? "-" : "",
		    (unsigned long long)(bits >> tap_below(64)));
		break;
	case 2: {
		/* Everyday magnitudes, near where jq switches to exponents. */
		static const double scale[] = {1,    1e3,  1e6,	 1e15, 1e16,
					       1e17, 1e31, 1e-4, 1e-5, 1e-7};

		d = (double)(bits >> 11) * 0x1p-53 *
		    scale[tap_below(sizeof(scale) / sizeof(scale[0]))];
		*n += (size_t)snprintf(buf + *n, cap - *n, "%.17g", d);
		break;
	}
	default:
		memcpy(&d, &bits, sizeof(d));
		if (!isfinite(d))
			d = (double)bits;
		*n += (size_t)snprintf(buf + *n, cap - *n,
				       tap_below(2) ? "%.17g" : "%.4g", d);
	}
}

static void gen_value(char *buf, size_t *n, size_t cap, int depth)
{
	static const char *const keys[] = {"id", "name", "steps", "a",
					   "é",	 "",	 "k\\n",  "url"};
	unsigned kind = tap_below(depth > 5 ? 4 : 7);

	if (*n + 256 > cap) {
		*n += (size_t)snprintf(buf + *n, cap - *n, "null");
		return;
	}
	switch (kind) {
	case 0:
		*n += (size_t)snprintf(buf + *n, cap - *n, "%s",
				       tap_below(3) == 0   ? "null"
				       : tap_below(2) == 0 ? "true"
							   : "false");
		break;
	case 1:
	case 2:
		gen_number(buf, n, cap);
		break;
	case 3:
		gen_string(buf, n, cap, 1);
		break;
	case 4:
	case 5: {
		int count = (int)tap_below(5);

		buf[(*n)++] = '{';
		for (int i = 0; i < count; i++) {
			if (i)
				buf[(*n)++] = ',';
			if (tap_below(3) == 0)
				gen_string(buf, n, cap, 0);
			else
				*n += (size_t)snprintf(
				    buf + *n, cap - *n, "\"%s\"",
				    keys[tap_below(sizeof(keys) /
						   sizeof(keys[0]))]);
			buf[(*n)++] = ':';
			gen_value(buf, n, cap, depth + 1);
		}
		buf[(*n)++] = '}';
		break;
	}
	default: {
		int count = (int)tap_below(5);

		buf[(*n)++] = '[';
		for (int i = 0; i < count; i++) {
			if (i)
				buf[(*n)++] = ',';
			gen_value(buf, n, cap, depth + 1);
		}
		buf[(*n)++] = ']';
	}
	}
	buf[*n] = '\0';
}

/* Appends @n bytes to a growing buffer. */
static void append(char **buf, size_t *len, size_t *cap, const char *s,
		   size_t n)
{
	if (*len + n + 1 > *cap) {
		char *p = realloc(*buf, *cap = (*len + n + 1) * 2);

		if (!p)
			abort();
		*buf = p;
	}
	memcpy(*buf + *len, s, n);
	*len += n;
	(*buf)[*len] = '\0';
}

/*
 * The generated documents go to jq in one file, one per line; only when
 * the whole differs are they compared one by one to name the culprit.
 */
static void test_generated_against_jq(void)
{
	enum { GENERATED = 400, DOC_MAX = 1 << 15 };
	char *docs = NULL, *mine = NULL, *theirs, path[64];
	size_t dlen = 0, dcap = 0, mlen = 0, mcap = 0, tlen = 0;
	size_t *starts = malloc((GENERATED + 1) * sizeof(*starts));
	char *doc = malloc(DOC_MAX + 1024);

	if (!starts || !doc)
		abort();
	for (int i = 0; i < GENERATED; i++) {
		size_t n = 0, rlen = 0;
		char *r;

		gen_value(doc, &n, DOC_MAX, 0);
		starts[i] = dlen;
		append(&docs, &dlen, &dcap, doc, n);
		append(&docs, &dlen, &dcap, "\n", 1);
		r = render_text(doc, n, &rlen);
		if (r)
			append(&mine, &mlen, &mcap, r, rlen);
		free(r);
	}
	starts[GENERATED] = dlen;
	theirs = jq_render(docs, dlen, path, &tlen);
	if (theirs && mine && tlen == mlen && !memcmp(theirs, mine, tlen)) {
		unlink(path);
		tap_ok(1, "render: %d generated documents as jq renders them",
		       GENERATED);
	} else {
		int culprit = 0;

		unlink(path);
		for (int i = 0; i < GENERATED && !culprit; i++) {
			char what[64];

			snprintf(what, sizeof(what),
				 "render: generated document %d", i);
			culprit = !agrees_with_jq(docs + starts[i],
						  starts[i + 1] - starts[i] - 1,
						  what);
		}
		if (!culprit)
			tap_ok(0, "render: %d generated documents, one jq run",
			       GENERATED);
	}
	free(theirs);
	free(mine);
	free(docs);
	free(doc);
	free(starts);
}

static void test_against_jq(void)
{
	if (!have_jq()) {
		tap_skip("jq not installed", "render: tricky documents as jq");
		tap_skip("jq not installed",
			 "render: generated documents as jq");
		return;
	}
	for (size_t t = 0; t < sizeof(tricky) / sizeof(tricky[0]); t++) {
		char what[64];

		snprintf(what, sizeof(what), "render: tricky document %zu", t);
		if (agrees_with_jq(tricky[t], strlen(tricky[t]), what))
			tap_ok(1, "%s: as jq renders it", what);
	}
	test_generated_against_jq();
}

int main(int argc, char **argv)
{
	(void)argc;
	tap_start(argv[0]);
	test_scalars_and_empties();
	test_structure();
	test_action_document();
	test_duplicate_keys();
	test_duplicate_keys_large();
	test_strings();
	test_invalid_utf8();
	test_numbers();
	test_number_buffer();
	test_trailing_newline();
	test_depth();
	test_against_jq();
	return tap_done();
}
