/*
 * names: how server names become file names and back.
 *
 * Pure: takes strings, returns strings. No I/O, no globals, no locks.
 * A slug never contains '/', NUL or a control character and never
 * starts with '.' or '-', so no name from the server can reach outside
 * its directory or hide itself.
 */
#ifndef PHFS_NAMES_H
#define PHFS_NAMES_H

#include <stddef.h>
#include <stdint.h>

/* Longest slug in bytes, not counting the NUL. */
#define NAMES_SLUG_MAX 64
/* Room for "<20 digits>-<slug>.json" and its NUL. */
#define NAMES_FILE_MAX (20 + 1 + NAMES_SLUG_MAX + 5 + 1)

/*
 * Writes the slug of @name (may be NULL) into @out, which holds at least
 * NAMES_SLUG_MAX + 1 bytes. Returns its length; 0 when nothing is left.
 */
size_t names_slug(const char *name, char *out);

/* "<id>-<slug>.json", or "<id>.json" when the slug is empty. */
void names_action_file(uint64_t id, const char *name, char *out);

/* "<id>-<slug>", or "<id>" when the slug is empty. */
void names_project_dir(uint64_t id, const char *name, char *out);

enum names_kind {
	NAMES_SCRATCH,    /* held in memory, never sent */
	NAMES_RECORD,     /* an action file without an id prefix */
	NAMES_RECORD_ID,  /* "<id>.json" or "<id>-anything.json" */
};

/*
 * Classifies a file name in a project directory. For NAMES_RECORD_ID
 * *id is set. A record name ends in ".json" and does not start with
 * '.', '#' or '~'.
 */
enum names_kind names_classify(const char *fname, uint64_t *id);

/*
 * Parses "<id>" or "<id>-anything" (a project directory name).
 * Returns 0 and sets *id, or -1.
 */
int names_parse_dir(const char *dname, uint64_t *id);

/*
 * The action name a new file stands for: @fname without ".json", and
 * without a "<digits>-" prefix when @strip_id_prefix. Returns a malloc'ed
 * string, or NULL on allocation failure.
 */
char *names_from_file(const char *fname, int strip_id_prefix);

#endif
