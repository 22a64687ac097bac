/*
 * fuzz_validate: checking an edited action file and what a save sends
 * (action.h: action_parse, action_diff, action_conflicts,
 * action_create_body).
 *
 * The input is up to three parts split by the byte 0x1E (record
 * separator): "EDIT", "BASE 0x1E EDIT" or "BASE 0x1E EDIT 0x1E SERVER".
 * BASE and SERVER are whatever JSON the server sent; EDIT is the file's
 * text. Checked, beyond crashes and leaks: a refused text comes with a
 * reason; a body never carries a read-only field; an edit diffed
 * against itself is NULL; nothing conflicts when the server still has
 * the base.
 */
#include "action.h"

#include "fuzz.h"

#include <cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SEP 0x1E

/* Never sent (posthog-api.md section 1.2). */
static const char *const read_only[] = {
    "id",
    "created_at",
    "created_by",
    "is_calculating",
    "team_id",
    "is_action",
    "bytecode_error",
    "creation_context",
    "user_access_level",
    "reference_count",
};

struct part {
	const char *p;
	size_t n;
};

/* Splits at up to two separators; returns how many parts. */
static int split(const uint8_t *data, size_t size, struct part *parts)
{
	const char *s = (const char *)data, *end = s + size;
	int n = 0;

	while (n < 2) {
		const char *sep = memchr(s, SEP, (size_t)(end - s));

		if (!sep)
			break;
		parts[n].p = s;
		parts[n++].n = (size_t)(sep - s);
		s = sep + 1;
	}
	parts[n].p = s;
	parts[n++].n = (size_t)(end - s);
	return n;
}

static cJSON *parse_text(const struct part *pt, const cJSON *base)
{
	char *text = fuzz_exact(pt->p, pt->n);
	char why[256];
	cJSON *obj;

	memset(why, 'X', sizeof(why));
	obj = action_parse(text, pt->n, base, why, sizeof(why));
	if (!obj) {
		size_t n = strnlen(why, sizeof(why));

		FUZZ_CHECK(n > 0 && n < sizeof(why),
			   "refused without a reason");
	} else {
		FUZZ_CHECK(cJSON_IsObject(obj), "accepted a non-object");
	}
	free(text);
	return obj;
}

/* Every member of @body is a writable field of @edit (or the name). */
static void check_body(const char *what, const cJSON *body, const cJSON *edit,
		       int name_given)
{
	const cJSON *f, *step;
	char *json;

	cJSON_ArrayForEach(f, body)
	{
		FUZZ_CHECK(f->string, "%s: a member without a key", what);
		for (size_t i = 0; i < sizeof(read_only) / sizeof(*read_only);
		     i++)
			FUZZ_CHECK(strcmp(f->string, read_only[i]),
				   "%s carries read-only '%s'", what,
				   f->string);
		FUZZ_CHECK(cJSON_GetObjectItemCaseSensitive(edit, f->string) ||
			       (name_given && !strcmp(f->string, "name")),
			   "%s carries '%s', which the edit lacks", what,
			   f->string);
		if (strcmp(f->string, "steps"))
			continue;
		cJSON_ArrayForEach(step, f)
		{
			FUZZ_CHECK(!cJSON_GetObjectItemCaseSensitive(
				       step, "selector_regex"),
				   "%s sends the computed selector_regex",
				   what);
		}
	}
	/* What the client sends. */
	json = cJSON_PrintUnformatted(body);
	FUZZ_CHECK(json, "%s does not print", what);
	cJSON_free(json);
}

static int conflicts(const cJSON *base, const cJSON *server, const cJSON *patch,
		     size_t outlen)
{
	char *out = malloc(outlen ? outlen : 1);
	int n;

	if (!out)
		abort();
	n = action_conflicts(base, server, patch, out, outlen);
	FUZZ_CHECK(n >= 0, "%d conflicts", n);
	if (outlen)
		FUZZ_CHECK(memchr(out, '\0', outlen), "unterminated list");
	free(out);
	return n;
}

static void check_new(const cJSON *edit, const char *fallback)
{
	cJSON *body = action_create_body(edit, fallback);
	const cJSON *name = cJSON_GetObjectItemCaseSensitive(edit, "name");

	FUZZ_CHECK(body, "no POST body");
	check_body("POST body", body, edit, fallback != NULL);
	if (fallback || name)
		FUZZ_CHECK(cJSON_GetObjectItemCaseSensitive(body, "name"),
			   "POST body without a name");
	cJSON_Delete(body);
}

static void check_update(const cJSON *base, const cJSON *edit,
			 const cJSON *server)
{
	int oom = 0;
	cJSON *patch, *self;

	self = action_diff(edit, edit, &oom);
	if (self) {
		char *s = cJSON_PrintUnformatted(self);

		FUZZ_FAIL("an edit diffed against itself gives %s",
			  s ? s : "(unprintable)");
	}
	FUZZ_CHECK(!oom, "out of memory diffing the edit with itself");

	patch = action_diff(base, edit, &oom);
	FUZZ_CHECK(!oom, "out of memory diffing");
	if (!patch)
		return;
	check_body("PATCH body", patch, edit, 0);
	FUZZ_CHECK(conflicts(base, base, patch, 4096) == 0,
		   "a conflict with an unchanged server");
	if (server) {
		int big = conflicts(base, server, patch, 4096);

		FUZZ_CHECK(conflicts(base, server, patch, 0) == big &&
			       conflicts(base, server, patch, 1) == big &&
			       conflicts(base, server, patch, 7) == big,
			   "the count depends on the buffer");
	}
	cJSON_Delete(patch);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct part parts[3];
	int n = split(data, size, parts);
	const struct part *edit_text = &parts[n == 1 ? 0 : 1];
	cJSON *base = NULL, *server = NULL, *fresh, *edit;

	if (n >= 2)
		base = cJSON_ParseWithLength(parts[0].p, parts[0].n);
	if (n == 3)
		server = cJSON_ParseWithLength(parts[2].p, parts[2].n);

	/* A new file: no base, read-only fields ignored. */
	fresh = parse_text(edit_text, NULL);
	if (fresh) {
		check_new(fresh, NULL);
		check_new(fresh, "from the file name");
		check_update(NULL, fresh, server);
		cJSON_Delete(fresh);
	}

	/* An existing action: read-only fields must match the base. */
	if (base) {
		edit = parse_text(edit_text, base);
		if (edit) {
			check_update(base, edit, server);
			cJSON_Delete(edit);
		}
	}
	cJSON_Delete(server);
	cJSON_Delete(base);
	return 0;
}
