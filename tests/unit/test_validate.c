/*
 * Unit tests of validate.c: what an action file may say (action_parse),
 * the minimal PATCH (action_diff), the conflict check (action_conflicts)
 * and the POST body of a new action (action_create_body).
 *
 * Every text is parsed from a buffer of exactly its length, with no NUL
 * after it, so that a read past the end shows under valgrind.
 */
#include "action.h"

#include "tap.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One step as the server returns it; the selector's regex is computed. */
#define STEP_HEAD                                                              \
	"{\"event\":\"$pageview\",\"properties\":[{\"key\":\"$browser\","      \
	"\"value\":[\"Chrome\",\"Firefox\"],\"operator\":\"exact\","           \
	"\"type\":\"event\"}],"
#define STEP_SELECTOR "\"selector\":\"#signup > button\","
#define STEP_REGEX "\"selector_regex\":\"(^|;)#signup > button\","
#define STEP_TAIL                                                              \
	"\"tag_name\":null,\"text\":null,\"text_matching\":null,\"href\":"     \
	"null,\"href_matching\":null,\"url\":\"https://example.com/signup/\"," \
	"\"url_matching\":\"contains\"}"
#define STEP STEP_HEAD STEP_SELECTOR STEP_REGEX STEP_TAIL
#define STEP_SENT STEP_HEAD STEP_SELECTOR STEP_TAIL

/* An action as the server returns it, in the server's key order. */
static const char base_doc[] =
    "{\"id\":42,\"name\":\"Signed up\",\"description\":\"People who signed "
    "up\",\"tags\":[\"b\",\"a\"],\"post_to_slack\":false,"
    "\"slack_message_format\":\"\",\"steps\":[" STEP "],"
    "\"created_at\":\"2024-03-01T12:00:00.123456Z\",\"created_by\":{\"id\":"
    "1,\"uuid\":\"0189c0b3-0000-0000-0000-000000000000\",\"first_name\":"
    "\"Ада\",\"email\":\"ada@example.com\"},\"deleted\":false,"
    "\"is_calculating\":false,\"last_calculated_at\":"
    "\"2024-03-01T12:00:00Z\",\"team_id\":12345,\"is_action\":true,"
    "\"bytecode_error\":null,\"pinned_at\":null,\"creation_context\":null,"
    "\"user_access_level\":\"editor\"}";

/* The writable fields of base_doc, as a POST body holds them. */
static const char base_writable[] =
    "{\"name\":\"Signed up\",\"description\":\"People who signed up\","
    "\"tags\":[\"b\",\"a\"],\"post_to_slack\":false,"
    "\"slack_message_format\":\"\",\"steps\":[" STEP_SENT "],"
    "\"deleted\":false,\"last_calculated_at\":\"2024-03-01T12:00:00Z\","
    "\"pinned_at\":null}";

static cJSON *json(const char *text)
{
	cJSON *v = cJSON_Parse(text);

	if (!v) {
		tap_diag_bytes("unparsable fixture", text, strlen(text));
		exit(2);
	}
	return v;
}

/* Replaces (or adds) @key of @doc with the JSON @value; NULL removes it. */
static void set(cJSON *doc, const char *key, const char *value)
{
	cJSON_DeleteItemFromObjectCaseSensitive(doc, key);
	if (value)
		cJSON_AddItemToObject(doc, key, json(value));
}

/* @doc with @key set to @value, as a new object. */
static cJSON *with(const cJSON *doc, const char *key, const char *value)
{
	cJSON *copy = cJSON_Duplicate(doc, 1);

	if (!copy)
		exit(2);
	if (cJSON_GetObjectItemCaseSensitive(copy, key) && value)
		cJSON_ReplaceItemInObjectCaseSensitive(copy, key, json(value));
	else
		set(copy, key, value);
	return copy;
}

/* Compact text of @v (NULL stays NULL); free() it. */
static char *text_of(const cJSON *v)
{
	return v ? cJSON_PrintUnformatted(v) : NULL;
}

static cJSON *parse_n(const char *text, size_t len, const cJSON *base,
		      char *why, size_t whylen)
{
	char *copy = malloc(len ? len : 1);
	cJSON *obj;

	if (!copy)
		exit(2);
	memcpy(copy, text, len);
	obj = action_parse(copy, len, base, why, whylen);
	free(copy);
	return obj;
}

/* Whether @text (@len bytes) is accepted; diagnoses the reason if not. */
static int accepted_n(const char *text, size_t len, const cJSON *base,
		      const char *what)
{
	char why[512] = "";
	cJSON *obj = parse_n(text, len, base, why, sizeof(why));
	int pass = tap_ok(obj != NULL, "accepted: %s", what);

	if (!pass) {
		tap_diag_bytes("text", text, len > 300 ? 300 : len);
		tap_diag("why: %s", why);
	}
	cJSON_Delete(obj);
	return pass;
}

static int accepted(const char *text, const cJSON *base, const char *what)
{
	return accepted_n(text, strlen(text), base, what);
}

/*
 * Whether @text is refused with exactly @reason: two checks, so that a
 * wrong reason shows beside the right one.
 */
static void refused_n(const char *text, size_t len, const cJSON *base,
		      const char *reason, const char *what)
{
	char why[512] = "";
	cJSON *obj = parse_n(text, len, base, why, sizeof(why));

	if (!tap_ok(obj == NULL, "refused: %s", what))
		tap_diag_bytes("text", text, len > 300 ? 300 : len);
	tap_is_str(obj ? "(accepted)" : why, reason, "reason: %s", what);
	cJSON_Delete(obj);
}

static void refused(const char *text, const cJSON *base, const char *reason,
		    const char *what)
{
	refused_n(text, strlen(text), base, reason, what);
}

/* ---- action_parse: syntax --------------------------------------------- */

/* @why starts with @prefix, and whatever follows it is ": ..." */
static int reason_starts(const char *why, const char *prefix)
{
	size_t n = strlen(prefix);

	return !strncmp(why, prefix, n) && (why[n] == '\0' || why[n] == ':');
}

static void syntax_is(const char *text, int line, int col, const char *what)
{
	char reason[128], why[512] = "";
	cJSON *obj = parse_n(text, strlen(text), NULL, why, sizeof(why));

	snprintf(reason, sizeof(reason), "invalid JSON at line %d, column %d",
		 line, col);
	tap_ok(obj == NULL, "refused: %s", what);
	if (!tap_ok(!obj && reason_starts(why, reason), "reason: %s", what)) {
		tap_diag("got: %s", obj ? "(accepted)" : why);
		tap_diag("expected: %s", reason);
	}
	cJSON_Delete(obj);
}

static void test_invalid_json(void)
{
	/* Columns count characters, from 1; lines from 1. */
	syntax_is("", 1, 1, "an empty text");
	syntax_is("{\"name\" 1}", 1, 9, "no colon after a key");
	syntax_is("{\"name\": tru}", 1, 10, "a misspelt literal");
	syntax_is("{\"name\": \"x\" \"y\"}", 1, 14, "no comma between members");
	syntax_is("{\"name\": [1,}", 1, 13, "a value missing in a list");
	syntax_is("{\"name\":\"a\\q\"}", 1, 11, "an invalid escape");
	syntax_is("{\"name\":\"\\ud800\"}", 1, 10, "a lone surrogate escape");
	syntax_is("{\"name\": -}", 1, 10, "a sign without digits");
	syntax_is("{\"steps\": [{\"event\": \"x\"}, {\"event\": nul}]}", 1, 38,
		  "an error deep in a step");
	syntax_is("{\t\"name\":\tx}", 1, 11, "a tab counts as one column");
	syntax_is("{\"name\": 1\n", 1, 11,
		  "the end of the text, after the last line");

	/* Several lines. */
	syntax_is("{\n  \"name\": \"x\",\n  \"description\" \"y\"\n}\n", 3, 17,
		  "no colon on line 3");
	syntax_is("{\n\n\n  \"a\": 1,\n  \"b\": ]\n}", 5, 8,
		  "a bracket on line 5 after empty lines");
	syntax_is("{\r\n  \"name\" 1\r\n}", 2, 10, "CRLF line ends");

	/* After non-ASCII text: characters, not bytes. */
	syntax_is("{\"name\": \"héllo wörld\", \"x\" 1}", 1, 29,
		  "after two-byte characters");
	syntax_is("{\n  \"name\": \"日本語\", \"x\": tru\n}\n", 2, 23,
		  "after three-byte characters on line 2");
	syntax_is("{\"name\": \"😀\" 1}", 1, 14, "after a four-byte character");

	/*
	 * A key that is not a string, the trailing comma being the most
	 * common: the error is the character where the key should start.
	 */
	syntax_is("{a:1}", 1, 2, "an unquoted key");
	syntax_is("{\n  name: \"x\"\n}\n", 2, 3, "an unquoted key on line 2");
	syntax_is("{\"name\": \"x\", b: 1}", 1, 15, "an unquoted second key");
	syntax_is("{\"name\": \"x\",}\n", 1, 14, "a trailing comma");
	syntax_is("{\n  \"name\": \"x\",\n}\n", 3, 1,
		  "a trailing comma, the brace on the next line");

	/* The end of a text without a final newline is after its last
	 * character, as with one. */
	syntax_is("{\"name\": \"x\"", 1, 13, "a missing brace at the very end");

	/* An unterminated string: its opening quote or the end of its line,
	 * not its first character. */
	{
		static const char text[] = "{\"name\": \"x\n";
		char why[256] = "";
		cJSON *obj =
		    parse_n(text, strlen(text), NULL, why, sizeof(why));

		tap_ok(obj == NULL, "refused: an unterminated string");
		tap_ok(reason_starts(why, "invalid JSON at line 1, column 10") ||
			   reason_starts(why, "invalid JSON at line 1, column 12"),
		       "an unterminated string: at its quote or at the "
		       "end of the line");
		if (strcmp(why, "invalid JSON at line 1, column 10") &&
		    strcmp(why, "invalid JSON at line 1, column 12"))
			tap_diag("got: %s", why);
		cJSON_Delete(obj);
	}
}

static void test_text_after_object(void)
{
	refused("{\"name\":\"x\"} x", NULL,
		"invalid JSON at line 1, column 14: text after the end of "
		"the object",
		"a word after the object");
	refused("{\"name\":\"x\"}{}", NULL,
		"invalid JSON at line 1, column 13: text after the end of "
		"the object",
		"a second object");
	refused("{\"name\":\"x\"}\n\n  ]\n", NULL,
		"invalid JSON at line 3, column 3: text after the end of "
		"the object",
		"a bracket two lines later");
	refused("{\"name\":\"é\"}é", NULL,
		"invalid JSON at line 1, column 13: text after the end of "
		"the object",
		"after non-ASCII text");
	refused_n("{\"name\":\"x\"}\n\0", 14, NULL,
		  "invalid JSON at line 2, column 1: text after the end of "
		  "the object",
		  "a NUL byte after the object");
	accepted("{\"name\":\"x\"} \t\r\n\n", NULL, "white space after it");
	accepted("\n  {\"name\":\"x\"}", NULL, "white space before it");
}

static void test_not_an_object(void)
{
	static const char *const texts[] = {
	    "[]",	"[{\"name\":\"x\"}]",
	    "\"name\"", "3",
	    "-0.5",	"null",
	    "true",	" [1] \n",
	};
	char what[64];

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		snprintf(what, sizeof(what), "not an object: %s", texts[i]);
		refused(texts[i], NULL, "an action file holds one JSON object",
			what);
	}
	accepted("{}", NULL, "an empty object");
}

/* ---- action_parse: fields --------------------------------------------- */

static void test_unknown_fields(void)
{
	refused("{\"nmae\": \"x\"}", NULL,
		"unknown field 'nmae' (did you mean 'name'?)", "nmae");
	refused("{\"name\": \"x\", \"descripton\": \"\"}", NULL,
		"unknown field 'descripton' (did you mean 'description'?)",
		"descripton");
	refused("{\"Name\": \"x\"}", NULL,
		"unknown field 'Name' (did you mean 'name'?)",
		"field names are case-sensitive");
	refused("{\"tag\": []}", NULL,
		"unknown field 'tag' (did you mean 'tags'?)", "tag");
	refused("{\"colour\": 1}", NULL, "unknown field 'colour'",
		"no close field: no suggestion");
	refused("{\"name\": \"x\", \"xyzzy_frobnicate\": 1}", NULL,
		"unknown field 'xyzzy_frobnicate'",
		"a long unknown field after a known one");
	refused("{\"steps\": [{\"evnt\": \"x\"}]}", NULL,
		"unknown field 'evnt' in steps[0] (did you mean 'event'?)",
		"a step field misspelt");
	refused("{\"steps\": [{\"event\": \"x\"}, {\"url_matchng\": \"x\"}]}",
		NULL,
		"unknown field 'url_matchng' in steps[1] (did you mean "
		"'url_matching'?)",
		"a step field misspelt in the second step");
	refused("{\"steps\": [{\"event\": \"x\"}, {\"isNew\": true}]}", NULL,
		"unknown field 'isNew' in steps[1]",
		"an unknown step field without a suggestion");

	/* A control character in a key is not copied into the reason. */
	{
		static const char text[] = "{\"a\\nb\\u001b\": 1}";
		char why[256] = "";
		cJSON *obj =
		    parse_n(text, strlen(text), NULL, why, sizeof(why));

		tap_ok(obj == NULL, "refused: a key with control characters");
		tap_is_str(why, "unknown field 'a?b?'",
			   "control characters in a key shown as '?'");
		tap_is_int(tap_control_at(why, strlen(why)), -1,
			   "the reason has no control character");
		cJSON_Delete(obj);
	}
}

struct type_case {
	const char *text;
	const char *reason;
};

static void test_wrong_types(void)
{
	static const struct type_case cases[] = {
	    {"{\"name\": 1}", "'name' must be a string or null"},
	    {"{\"name\": true}", "'name' must be a string or null"},
	    {"{\"name\": [\"x\"]}", "'name' must be a string or null"},
	    {"{\"name\": {}}", "'name' must be a string or null"},
	    {"{\"description\": null}", "'description' must be a string"},
	    {"{\"description\": 3}", "'description' must be a string"},
	    {"{\"description\": [\"x\"]}", "'description' must be a string"},
	    {"{\"tags\": \"a\"}", "'tags' must be a list of strings"},
	    {"{\"tags\": null}", "'tags' must be a list of strings"},
	    {"{\"tags\": {\"a\": 1}}", "'tags' must be a list of strings"},
	    {"{\"tags\": [1]}", "tags[0] must be a string"},
	    {"{\"tags\": [\"a\", null]}", "tags[1] must be a string"},
	    {"{\"tags\": [\"a\", \"b\", [\"c\"]]}", "tags[2] must be a string"},
	    {"{\"post_to_slack\": \"yes\"}",
	     "'post_to_slack' must be true or false"},
	    {"{\"post_to_slack\": 1}", "'post_to_slack' must be true or false"},
	    {"{\"post_to_slack\": null}",
	     "'post_to_slack' must be true or false"},
	    {"{\"deleted\": \"false\"}", "'deleted' must be true or false"},
	    {"{\"slack_message_format\": null}",
	     "'slack_message_format' must be a string"},
	    {"{\"slack_message_format\": 5}",
	     "'slack_message_format' must be a string"},
	    {"{\"pinned_at\": 5}", "'pinned_at' must be a string or null"},
	    {"{\"last_calculated_at\": false}",
	     "'last_calculated_at' must be a string or null"},
	    {"{\"_create_in_folder\": null}",
	     "'_create_in_folder' must be a string"},
	    {"{\"steps\": {}}", "'steps' must be a list of steps"},
	    {"{\"steps\": null}", "'steps' must be a list of steps"},
	    {"{\"steps\": \"x\"}", "'steps' must be a list of steps"},
	    {"{\"steps\": [\"x\"]}", "steps[0] must be an object"},
	    {"{\"steps\": [{}, 1]}", "steps[1] must be an object"},
	    {"{\"steps\": [[]]}", "steps[0] must be an object"},
	    {"{\"steps\": [null]}", "steps[0] must be an object"},
	    {"{\"steps\": [{\"event\": 1}]}",
	     "steps[0].event must be a string or null"},
	    {"{\"steps\": [{\"selector\": true}]}",
	     "steps[0].selector must be a string or null"},
	    {"{\"steps\": [{\"tag_name\": [\"a\"]}]}",
	     "steps[0].tag_name must be a string or null"},
	    {"{\"steps\": [{\"text\": {}}]}",
	     "steps[0].text must be a string or null"},
	    {"{\"steps\": [{\"href\": 0}]}",
	     "steps[0].href must be a string or null"},
	    {"{\"steps\": [{}, {\"url\": 1.5}]}",
	     "steps[1].url must be a string or null"},
	    {"{\"steps\": [{\"properties\": {}}]}",
	     "steps[0].properties must be a list of objects or null"},
	    {"{\"steps\": [{\"properties\": \"x\"}]}",
	     "steps[0].properties must be a list of objects or null"},
	    {"{\"steps\": [{\"properties\": [\"x\"]}]}",
	     "steps[0].properties must hold only objects"},
	    {"{\"steps\": [{\"properties\": [{}, 1]}]}",
	     "steps[0].properties must hold only objects"},
	    {"{\"steps\": [{\"properties\": [[]]}]}",
	     "steps[0].properties must hold only objects"},
	    {"{\"steps\": [{\"properties\": [null]}]}",
	     "steps[0].properties must hold only objects"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		refused(cases[i].text, NULL, cases[i].reason, cases[i].text);

	accepted("{\"name\": null}", NULL, "name null");
	accepted("{\"tags\": []}", NULL, "no tags");
	accepted("{\"steps\": []}", NULL, "no steps");
	accepted("{\"steps\": [{}]}", NULL, "an empty step");
	accepted("{\"steps\": [{\"properties\": null}]}", NULL,
		 "properties null");
	accepted("{\"steps\": [{\"properties\": []}]}", NULL,
		 "properties empty");
	accepted("{\"steps\": [{\"properties\": [{}, {\"key\": \"k\", "
		 "\"value\": [1, {\"a\": null}]}]}]}",
		 NULL, "properties of objects");
	accepted("{\"steps\": [{\"selector_regex\": 5}]}", NULL,
		 "selector_regex is computed: any value");
	accepted("{\"pinned_at\": null, \"last_calculated_at\": null, "
		 "\"_create_in_folder\": \"\", \"deleted\": true, "
		 "\"post_to_slack\": false}",
		 NULL, "the other writable fields");
	accepted(base_doc, NULL, "an action as the server returns it");
}

static void test_blank_name(void)
{
	refused("{\"name\": \"\"}", NULL, "'name' is blank", "name \"\"");
	refused("{\"name\": \"   \"}", NULL, "'name' is blank", "name spaces");
	refused("{\"name\": \"\\t\\n\"}", NULL, "'name' is blank",
		"name a tab and a newline");
	refused("{\"name\": \" \\r\\n\\t \", \"description\": \"x\"}", NULL,
		"'name' is blank", "name of mixed white space");
	accepted("{\"name\": \" x \"}", NULL, "a name with spaces around");
	accepted("{\"description\": \"\", \"slack_message_format\": \"\"}",
		 NULL, "an empty description and slack format");
}

/* {"@key": "@n copies of @unit"} */
static char *long_value(const char *key, const char *unit, size_t n)
{
	size_t ul = strlen(unit), kl = strlen(key);
	char *s = malloc(kl + ul * n + 16), *p = s;

	if (!s)
		exit(2);
	p += sprintf(p, "{\"%s\": \"", key);
	for (size_t i = 0; i < n; i++, p += ul)
		memcpy(p, unit, ul);
	strcpy(p, "\"}");
	return s;
}

static void length_case(const char *key, const char *unit, size_t n,
			const char *reason)
{
	char *text = long_value(key, unit, n);
	char what[96];

	snprintf(what, sizeof(what), "%s of %zu x '%s'", key, n, unit);
	if (reason)
		refused(text, NULL, reason, what);
	else
		accepted(text, NULL, what);
	free(text);
}

static void test_lengths(void)
{
	static const char name_long[] = "'name' is longer than 400 characters";
	static const char slack_long[] =
	    "'slack_message_format' is longer than 1200 characters";

	length_case("name", "a", 400, NULL);
	length_case("name", "a", 401, name_long);
	length_case("name", "é", 400, NULL);
	length_case("name", "é", 401, name_long);
	length_case("name", "日", 400, NULL);
	length_case("name", "日", 401, name_long);
	length_case("name", "😀", 400, NULL);
	length_case("name", "😀", 401, name_long);
	/* The limit is on the value, not on its escaped text. */
	length_case("name", "\\u00e9", 400, NULL);
	length_case("name", "\\u00e9", 401, name_long);
	length_case("name", "\\ud83d\\ude00", 400, NULL);
	length_case("slack_message_format", "a", 1200, NULL);
	length_case("slack_message_format", "a", 1201, slack_long);
	length_case("slack_message_format", "é", 1200, NULL);
	length_case("slack_message_format", "é", 1201, slack_long);
	length_case("description", "a", 5000, NULL);
}

static void test_matching(void)
{
	static const char *const fields[] = {"text_matching", "href_matching",
					     "url_matching"};
	static const char *const good[] = {"\"contains\"", "\"exact\"",
					   "\"regex\"", "null"};
	static const char *const bad[] = {
	    "\"Contains\"", "\"foo\"",	  "1",	  "\"\"",
	    "\"EXACT\"",    "\"regex \"", "true", "[\"exact\"]"};
	char text[160], what[160], reason[160];

	for (size_t f = 0; f < 3; f++) {
		for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
			snprintf(
			    text, sizeof(text),
			    "{\"steps\": [{\"event\": \"e\", \"%s\": %s}]}",
			    fields[f], good[i]);
			snprintf(what, sizeof(what), "%s %s", fields[f],
				 good[i]);
			accepted(text, NULL, what);
		}
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			snprintf(text, sizeof(text),
				 "{\"steps\": [{}, {\"%s\": %s}]}", fields[f],
				 bad[i]);
			snprintf(what, sizeof(what), "%s %s", fields[f],
				 bad[i]);
			snprintf(reason, sizeof(reason),
				 "steps[1].%s must be \"contains\", \"exact\", "
				 "\"regex\" or null",
				 fields[f]);
			refused(text, NULL, reason, what);
		}
	}
}

static void test_empty_step_strings(void)
{
	static const char *const fields[] = {"event", "selector", "tag_name",
					     "text",  "href",	  "url"};
	char text[160], what[160], reason[160];

	for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
		snprintf(text, sizeof(text), "{\"steps\": [{\"%s\": \"\"}]}",
			 fields[f]);
		snprintf(what, sizeof(what), "step %s \"\"", fields[f]);
		snprintf(reason, sizeof(reason),
			 "steps[0].%s is an empty string: use null for no "
			 "condition",
			 fields[f]);
		refused(text, NULL, reason, what);

		snprintf(text, sizeof(text),
			 "{\"steps\": [{\"event\": \"e\"}, {\"%s\": \"\"}]}",
			 fields[f]);
		snprintf(what, sizeof(what), "step %s \"\" in steps[1]",
			 fields[f]);
		snprintf(reason, sizeof(reason),
			 "steps[1].%s is an empty string: use null for no "
			 "condition",
			 fields[f]);
		refused(text, NULL, reason, what);

		snprintf(text, sizeof(text), "{\"steps\": [{\"%s\": null}]}",
			 fields[f]);
		snprintf(what, sizeof(what), "step %s null", fields[f]);
		accepted(text, NULL, what);

		snprintf(text, sizeof(text), "{\"steps\": [{\"%s\": \" \"}]}",
			 fields[f]);
		snprintf(what, sizeof(what), "step %s a space", fields[f]);
		accepted(text, NULL, what);
	}
}

static void test_read_only(void)
{
	static const struct {
		const char *key, *other;
	} ro[] = {
	    {"id", "43"},
	    {"created_at", "\"2024-03-02T12:00:00Z\""},
	    {"created_by", "null"},
	    {"is_calculating", "true"},
	    {"team_id", "1"},
	    {"is_action", "false"},
	    {"bytecode_error", "\"oops\""},
	    {"creation_context", "\"web\""},
	    {"user_access_level", "\"manager\""},
	};
	cJSON *base = json(base_doc);
	char what[128], reason[128];

	accepted(base_doc, base, "the file as it was opened");
	for (size_t i = 0; i < sizeof(ro) / sizeof(ro[0]); i++) {
		cJSON *edit = with(base, ro[i].key, ro[i].other);
		cJSON *gone = with(base, ro[i].key, NULL);
		char *text = text_of(edit), *text_gone = text_of(gone);

		snprintf(what, sizeof(what), "%s changed to %s", ro[i].key,
			 ro[i].other);
		snprintf(reason, sizeof(reason),
			 "'%s' is read-only and was changed", ro[i].key);
		refused(text, base, reason, what);
		snprintf(what, sizeof(what), "%s changed, new file", ro[i].key);
		accepted(text, NULL, what);
		snprintf(what, sizeof(what), "%s left out", ro[i].key);
		accepted(text_gone, base, what);
		free(text);
		free(text_gone);
		cJSON_Delete(edit);
		cJSON_Delete(gone);
	}

	/* A change deep inside a read-only object is a change. */
	{
		cJSON *edit = cJSON_Duplicate(base, 1);
		cJSON *by =
		    cJSON_GetObjectItemCaseSensitive(edit, "created_by");
		char *text;

		cJSON_ReplaceItemInObjectCaseSensitive(
		    by, "email", cJSON_CreateString("eve@example.com"));
		text = text_of(edit);
		refused(text, base, "'created_by' is read-only and was changed",
			"created_by.email changed");
		free(text);
		cJSON_Delete(edit);
	}

	/* Writable fields may change beside unchanged read-only ones. */
	{
		cJSON *edit = with(base, "name", "\"Signed up twice\"");
		char *text;

		set(edit, "tags", "[]");
		text = text_of(edit);
		accepted(text, base, "writable fields changed, read-only kept");
		free(text);
		cJSON_Delete(edit);
	}

	/* A new file: read-only fields are ignored whatever they hold. */
	accepted("{\"id\": \"not a number\", \"created_at\": 5, "
		 "\"created_by\": [1], \"team_id\": null, \"is_action\": "
		 "\"x\", \"is_calculating\": {}, \"bytecode_error\": 1, "
		 "\"creation_context\": {\"a\": 1}, \"user_access_level\": "
		 "false, \"reference_count\": \"many\", \"name\": \"n\"}",
		 NULL, "read-only fields of any value in a new file");
	refused("{\"reference_count\": 3}", base,
		"'reference_count' is read-only and was changed",
		"a read-only field the opened version did not have");
	cJSON_Delete(base);
}

static void test_duplicates(void)
{
	cJSON *base = json(base_doc);

	refused("{\"name\": \"x\", \"name\": \"y\"}", NULL,
		"field 'name' is given twice", "name twice");
	refused("{\"name\": \"x\", \"description\": \"\", \"name\": \"x\"}",
		NULL, "field 'name' is given twice", "name twice, same value");
	refused("{\"id\": 42, \"name\": \"x\", \"id\": 42}", base,
		"field 'id' is given twice", "a read-only field twice");
	refused("{\"steps\": [{\"event\": \"a\", \"url\": null, \"event\": "
		"\"b\"}]}",
		NULL, "field 'event' is given twice", "event twice in a step");
	refused("{\"steps\": [{}, {\"url\": \"a\", \"url\": \"a\"}]}", NULL,
		"field 'url' is given twice", "url twice in the second step");
	refused("{\"steps\": [{\"properties\": [{\"key\": \"a\", \"key\": "
		"\"b\"}]}]}",
		NULL, "field 'key' is given twice",
		"a key twice in a property");
	accepted("{\"name\": \"x\", \"steps\": [{\"event\": \"name\"}, "
		 "{\"event\": \"x\"}]}",
		 NULL, "the same key in two objects is no duplicate");
	cJSON_Delete(base);
}

static void test_nul(void)
{
	refused("{\"name\": \"ab\\u0000\"}", NULL,
		"line 1, column 13: \\u0000 (NUL) is not allowed in a string",
		"an escaped NUL in a value");
	refused("{\"na\\u0000me\": 1}", NULL,
		"line 1, column 5: \\u0000 (NUL) is not allowed in a string",
		"an escaped NUL in a key");
	refused("{\n  \"description\": \"\",\n  \"name\": \"ab\\u0000\"\n}\n",
		NULL,
		"line 3, column 14: \\u0000 (NUL) is not allowed in a string",
		"an escaped NUL on line 3");
	refused("{\"name\": \"é日😀\\u0000\"}", NULL,
		"line 1, column 14: \\u0000 (NUL) is not allowed in a string",
		"an escaped NUL after non-ASCII text");
	refused("{\"name\": \"a\\\\\\u0000\"}", NULL,
		"line 1, column 14: \\u0000 (NUL) is not allowed in a string",
		"an escaped NUL after an escaped backslash");
	refused("{\"name\": \"\\\"\\u0000\"}", NULL,
		"line 1, column 13: \\u0000 (NUL) is not allowed in a string",
		"an escaped NUL after an escaped quote");
	refused("{\"steps\": [{\"properties\": [{\"key\": \"k\", \"value\": "
		"[\"\\u0000\"]}]}]}",
		NULL,
		"line 1, column 52: \\u0000 (NUL) is not allowed in a string",
		"an escaped NUL deep in a property");

	/* "\\u0000" is a backslash and the text u0000. */
	{
		static const char text[] = "{\"name\": \"a\\\\u0000\"}";
		char why[256] = "";
		cJSON *obj =
		    parse_n(text, strlen(text), NULL, why, sizeof(why));
		cJSON *name = cJSON_GetObjectItemCaseSensitive(obj, "name");

		if (!tap_ok(obj != NULL, "accepted: an escaped backslash "
					 "before u0000"))
			tap_diag("why: %s", why);
		tap_is_str(cJSON_GetStringValue(name), "a\\u0000",
			   "the name keeps the backslash and u0000");
		cJSON_Delete(obj);
	}
	accepted("{\"name\": \"\\\\\\\\u0000\"}", NULL,
		 "two escaped backslashes before u0000");
	accepted("{\"name\": \"\\u1000\\u0100\\u0010 u0000\"}", NULL,
		 "escapes other than NUL, and u0000 without a backslash");
}

/*
 * A NUL byte in the text is not JSON (control characters must be
 * escaped), and cJSON would end the string there: "a<NUL>b" would be
 * saved as "a".
 */
static void test_raw_nul(void)
{
	static const char text[] = "{\"name\":\"a\0b\"}";
	char why[256] = "";
	cJSON *obj = parse_n(text, sizeof(text) - 1, NULL, why, sizeof(why));

	if (!tap_ok(obj == NULL, "refused: a NUL byte inside a string")) {
		cJSON *name = cJSON_GetObjectItemCaseSensitive(obj, "name");

		tap_diag("the name was read as \"%s\"",
			 cJSON_GetStringValue(name));
	}
	tap_ok(strstr(why, "line 1, column 11") != NULL,
	       "the reason gives the NUL's line and column");
	if (!strstr(why, "line 1, column 11"))
		tap_diag("why: %s", why);
	cJSON_Delete(obj);
}

static void test_parse_result_and_why(void)
{
	static const char text[] = "{\"nmae\": \"x\"}";
	char why[16];
	cJSON *obj;

	obj = parse_n(base_doc, strlen(base_doc), NULL, why, sizeof(why));
	tap_is_str(
	    cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(obj, "name")),
	    "Signed up", "the parsed object holds the name");
	tap_is_int(
	    cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(obj, "steps")),
	    1, "the parsed object holds the steps");
	cJSON_Delete(obj);

	/* The reason is cut to whylen, and nothing past it is written. */
	for (size_t n = 0; n <= 9; n++) {
		memset(why, 'X', sizeof(why));
		obj = parse_n(text, strlen(text), NULL, why, n);
		tap_ok(obj == NULL && (n == 0 || strlen(why) == n - 1) &&
			   !memcmp(why, "unknown fi", n ? n - 1 : 0) &&
			   why[n] == 'X' && why[sizeof(why) - 1] == 'X',
		       "a reason in %zu bytes is cut safely", n);
		cJSON_Delete(obj);
	}
}

/* ---- action_diff ------------------------------------------------------ */

static void diff_is(const cJSON *base, const cJSON *edit, const char *expected,
		    const char *what)
{
	int oom = -1;
	cJSON *body = action_diff(base, edit, &oom);
	char *got = text_of(body);

	tap_is_str(got, expected, "diff: %s", what);
	tap_is_int(oom, 0, "diff: %s: no allocation failure", what);
	free(got);
	cJSON_Delete(body);
}

static void diff_with(const cJSON *base, const char *key, const char *value,
		      const char *expected, const char *what)
{
	cJSON *edit = with(base, key, value);

	diff_is(base, edit, expected, what);
	cJSON_Delete(edit);
}

static void test_diff(void)
{
	cJSON *base = json(base_doc), *edit;

	edit = cJSON_Duplicate(base, 1);
	diff_is(base, edit, NULL, "no change");
	cJSON_Delete(edit);
	edit = json("{\n  \"name\" : \"Signed up\",\n  \"steps\": [" STEP
		    "],\n  \"tags\": [ \"b\", \"a\" ]\n}");
	diff_is(base, edit, NULL, "the same values, other spacing and order");
	cJSON_Delete(edit);
	edit = json("{}");
	diff_is(base, edit, NULL, "an empty edit");
	cJSON_Delete(edit);

	diff_with(base, "name", "\"Signed up!\"", "{\"name\":\"Signed up!\"}",
		  "the name changed");
	diff_with(base, "name", "null", "{\"name\":null}", "the name cleared");
	diff_with(base, "description", "\"\"", "{\"description\":\"\"}",
		  "the description emptied");
	diff_with(base, "post_to_slack", "true", "{\"post_to_slack\":true}",
		  "post_to_slack changed");
	diff_with(base, "deleted", "true", "{\"deleted\":true}",
		  "deleted changed");
	diff_with(base, "pinned_at", "\"2024-05-01T00:00:00Z\"",
		  "{\"pinned_at\":\"2024-05-01T00:00:00Z\"}", "pinned");
	diff_with(base, "_create_in_folder", "\"Unfiled\"",
		  "{\"_create_in_folder\":\"Unfiled\"}",
		  "a writable field the server does not return");

	/* Several fields, in the order of the edit. */
	edit = with(base, "name", "\"N\"");
	set(edit, "post_to_slack", "true");
	cJSON_ReplaceItemInObjectCaseSensitive(edit, "tags", json("[\"c\"]"));
	diff_is(base, edit,
		"{\"name\":\"N\",\"tags\":[\"c\"],\"post_to_slack\":true}",
		"several fields changed");
	cJSON_Delete(edit);

	/* Absent from the edit: not sent. */
	edit = json("{\"name\": \"Signed up\"}");
	diff_is(base, edit, NULL, "only an unchanged name");
	cJSON_Delete(edit);
	edit = json("{\"description\": \"d\"}");
	diff_is(base, edit, "{\"description\":\"d\"}",
		"only a changed description: nothing else sent");
	cJSON_Delete(edit);

	/* Read-only and unknown fields are never sent. */
	edit = with(base, "id", "7");
	set(edit, "created_at", "\"2020-01-01T00:00:00Z\"");
	cJSON_ReplaceItemInObjectCaseSensitive(edit, "team_id", json("1"));
	cJSON_ReplaceItemInObjectCaseSensitive(edit, "created_by",
					       json("null"));
	set(edit, "is_calculating", "true");
	set(edit, "user_access_level", "\"none\"");
	set(edit, "reference_count", "9");
	set(edit, "bogus", "1");
	diff_is(base, edit, NULL, "only read-only and unknown fields changed");
	cJSON_ReplaceItemInObjectCaseSensitive(edit, "name", json("\"M\""));
	diff_is(base, edit, "{\"name\":\"M\"}",
		"read-only fields changed beside the name");
	cJSON_Delete(edit);

	/* Steps: selector_regex is computed by the server. */
	diff_with(base, "steps",
		  "[" STEP_HEAD STEP_SELECTOR
		  "\"selector_regex\":\"something else\"," STEP_TAIL "]",
		  NULL, "only selector_regex changed");
	diff_with(base, "steps", "[" STEP_SENT "]", NULL,
		  "selector_regex left out");
	diff_with(base, "steps",
		  "[" STEP_HEAD STEP_SELECTOR
		  "\"selector_regex\":null," STEP_TAIL "]",
		  NULL, "selector_regex null");
	diff_with(
	    base, "steps",
	    "[" STEP_HEAD "\"selector\":\"#join\"," STEP_REGEX STEP_TAIL "]",
	    "{\"steps\":[" STEP_HEAD "\"selector\":\"#join\"," STEP_TAIL "]}",
	    "the selector changed: steps sent without selector_regex");
	diff_with(base, "steps", "[" STEP "," STEP "]",
		  "{\"steps\":[" STEP_SENT "," STEP_SENT "]}",
		  "a second step: no selector_regex in any step");
	diff_with(base, "steps", "[]", "{\"steps\":[]}", "all steps removed");

	/* Tags: the order is the server's, so a new order is a change. */
	diff_with(base, "tags", "[\"a\",\"b\"]", "{\"tags\":[\"a\",\"b\"]}",
		  "tags reordered");
	diff_with(base, "tags", "[\"b\",\"a\"]", NULL, "the same tags");

	/* Nested properties compare deeply. */
	diff_with(base, "steps",
		  "[{\"event\":\"$pageview\",\"properties\":[{\"key\":"
		  "\"$browser\",\"value\":[\"Chrome\",\"Safari\"],"
		  "\"operator\":\"exact\",\"type\":\"event\"}]," STEP_SELECTOR
		      STEP_REGEX STEP_TAIL "]",
		  "{\"steps\":[{\"event\":\"$pageview\",\"properties\":[{"
		  "\"key\":\"$browser\",\"value\":[\"Chrome\",\"Safari\"],"
		  "\"operator\":\"exact\",\"type\":\"event\"}]," STEP_SELECTOR
		      STEP_TAIL "]}",
		  "a value deep in a property changed");
	diff_with(base, "steps",
		  "[{\"event\":\"$pageview\",\"properties\":[{\"key\":"
		  "\"$browser\",\"value\":[\"Chrome\",\"Firefox\"],"
		  "\"operator\":\"exact\",\"type\":\"event\"}]," STEP_SELECTOR
		      STEP_REGEX STEP_TAIL "]",
		  NULL, "an equal property, written again");
	diff_with(base, "steps",
		  "[{\"event\":\"$pageview\",\"properties\":[{\"key\":"
		  "\"$browser\",\"value\":[\"Chrome\",\"Firefox\"],"
		  "\"operator\":\"exact\"}]," STEP_SELECTOR STEP_REGEX STEP_TAIL
		  "]",
		  "{\"steps\":[{\"event\":\"$pageview\",\"properties\":[{"
		  "\"key\":\"$browser\",\"value\":[\"Chrome\",\"Firefox\"],"
		  "\"operator\":\"exact\"}]," STEP_SELECTOR STEP_TAIL "]}",
		  "a key removed from a property");
	cJSON_Delete(base);
}

/* ---- action_conflicts ------------------------------------------------- */

static void conflicts_is(const cJSON *base, const cJSON *server,
			 const char *patch_text, int expected_n,
			 const char *expected, const char *what)
{
	cJSON *patch = json(patch_text);
	char out[128];
	int n;

	memset(out, 'X', sizeof(out));
	n = action_conflicts(base, server, patch, out, sizeof(out));
	tap_is_int(n, expected_n, "conflicts: %s: count", what);
	tap_is_str(out, expected, "conflicts: %s: names", what);
	cJSON_Delete(patch);
}

static void test_conflicts(void)
{
	cJSON *base = json(base_doc), *server;

	server = cJSON_Duplicate(base, 1);
	conflicts_is(base, server, "{\"name\":\"x\"}", 0, "",
		     "no change on the server");
	conflicts_is(base, server, "{\"name\":\"x\",\"tags\":[],\"steps\":[]}",
		     0, "", "no change on the server, several fields sent");
	cJSON_Delete(server);

	server = with(base, "name", "\"Renamed\"");
	conflicts_is(base, server, "{\"name\":\"x\"}", 1, "name",
		     "the name changed on both sides");
	conflicts_is(base, server, "{\"name\":\"Renamed\"}", 1, "name",
		     "the name changed on the server, to the value sent");
	conflicts_is(base, server, "{\"description\":\"x\"}", 0, "",
		     "the name changed on the server, the description sent");
	cJSON_Delete(server);

	server = with(base, "description", "\"changed\"");
	cJSON_ReplaceItemInObjectCaseSensitive(server, "name",
					       json("\"Renamed\""));
	cJSON_ReplaceItemInObjectCaseSensitive(server, "id", json("1"));
	conflicts_is(base, server,
		     "{\"description\":\"d\",\"tags\":[],\"name\":\"x\"}", 2,
		     "description, name",
		     "two fields changed on both sides, in the patch's order");
	conflicts_is(base, server, "{\"post_to_slack\":true}", 0, "",
		     "other fields changed on the server");
	cJSON_Delete(server);

	server = with(base, "steps",
		      "[" STEP_HEAD STEP_SELECTOR
		      "\"selector_regex\":\"recomputed\"," STEP_TAIL "]");
	conflicts_is(base, server, "{\"steps\":[]}", 0, "",
		     "only selector_regex differs on the server");
	cJSON_Delete(server);

	server = with(base, "steps",
		      "[" STEP_HEAD
		      "\"selector\":\"#other\"," STEP_REGEX STEP_TAIL "]");
	conflicts_is(base, server, "{\"steps\":[]}", 1, "steps",
		     "the selector changed on the server");
	cJSON_Delete(server);

	server = with(base, "tags", "[\"a\",\"b\"]");
	conflicts_is(base, server, "{\"tags\":[\"c\"]}", 1, "tags",
		     "the tags reordered on the server");
	cJSON_Delete(server);

	server = with(base, "pinned_at", NULL);
	conflicts_is(base, server, "{\"pinned_at\":\"2024-01-01T00:00:00Z\"}",
		     1, "pinned_at", "a field gone from the server");
	cJSON_Delete(server);

	/* Small buffers: cut, terminated, nothing written past them. */
	server = with(base, "name", "\"Renamed\"");
	cJSON_ReplaceItemInObjectCaseSensitive(server, "description",
					       json("\"changed\""));
	{
		static const char full[] = "name, description";
		cJSON *patch = json("{\"name\":\"x\",\"description\":\"y\"}");
		char out[64];

		for (size_t len = 0; len <= sizeof(full) + 2; len++) {
			size_t want =
			    len ? (len - 1 < strlen(full) ? len - 1
							  : strlen(full))
				: 0;
			int n, untouched = 1;

			memset(out, 'X', sizeof(out));
			n = action_conflicts(base, server, patch, out, len);
			for (size_t i = len; i < sizeof(out); i++)
				untouched &= out[i] == 'X';
			tap_is_int(n, 2, "conflicts in %zu bytes: the count",
				   len);
			tap_ok(untouched,
			       "conflicts in %zu bytes: nothing "
			       "written past them",
			       len);
			if (len)
				tap_is_mem(out, strlen(out), full, want,
					   "conflicts in %zu bytes: the "
					   "names cut",
					   len);
		}
		cJSON_Delete(patch);
	}
	cJSON_Delete(server);
	cJSON_Delete(base);
}

/* ---- action_create_body ----------------------------------------------- */

static void create_is(const char *edit_text, const char *fallback,
		      const char *expected, const char *what)
{
	cJSON *edit = json(edit_text);
	cJSON *body = action_create_body(edit, fallback);
	char *got = text_of(body);

	tap_is_str(got, expected, "create: %s", what);
	free(got);
	cJSON_Delete(body);
	cJSON_Delete(edit);
}

static void test_create_body(void)
{
	create_is(base_doc, "from-file", base_writable,
		  "a server document: writable fields only, its own name");
	create_is("{\"description\":\"d\"}", "From file",
		  "{\"description\":\"d\",\"name\":\"From file\"}",
		  "no name: the fallback");
	create_is("{}", "Регистрация", "{\"name\":\"Регистрация\"}",
		  "an empty object: the fallback");
	create_is("{\"name\":\"Mine\",\"tags\":[\"t\"]}", "From file",
		  "{\"name\":\"Mine\",\"tags\":[\"t\"]}",
		  "the JSON's name wins");
	create_is("{\"id\":5,\"team_id\":1,\"created_by\":null,"
		  "\"created_at\":\"x\",\"is_action\":true,"
		  "\"is_calculating\":false,\"bytecode_error\":null,"
		  "\"creation_context\":null,\"user_access_level\":\"editor\","
		  "\"reference_count\":3,\"post_to_slack\":true}",
		  "fb", "{\"post_to_slack\":true,\"name\":\"fb\"}",
		  "read-only fields dropped");
	create_is("{\"_create_in_folder\":\"Unfiled/Actions\"}", "fb",
		  "{\"_create_in_folder\":\"Unfiled/Actions\",\"name\":\"fb\"}",
		  "the folder is kept");
	create_is("{\"description\":\"d\"}", NULL, "{\"description\":\"d\"}",
		  "no name and no fallback");
	create_is("{\"steps\":[" STEP "," STEP_HEAD "\"selector\":null,"
		  "\"selector_regex\":null," STEP_TAIL "]}",
		  "fb",
		  "{\"steps\":[" STEP_SENT "," STEP_HEAD
		  "\"selector\":null," STEP_TAIL "],\"name\":\"fb\"}",
		  "steps without selector_regex");
}

int main(int argc, char **argv)
{
	(void)argc;
	tap_start(argv[0]);
	test_invalid_json();
	test_text_after_object();
	test_not_an_object();
	test_unknown_fields();
	test_wrong_types();
	test_blank_name();
	test_lengths();
	test_matching();
	test_empty_step_strings();
	test_read_only();
	test_duplicates();
	test_nul();
	test_raw_nul();
	test_parse_result_and_why();
	test_diff();
	test_conflicts();
	test_create_body();
	return tap_done();
}
