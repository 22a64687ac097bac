/*
 * save: changes of content. Writes into buffers, and the moments they
 * become requests: a flush of a dirty handle, a cut, and save_text for
 * rename.c (a rename onto an action name). DESIGN.md "Saving" and
 * "Creating, renaming, removing" are the rules; editor-saves.md is why.
 *
 * Must never lose text (a failed update leaves NAME.rejected, a failed
 * create stays as a local file), never send an empty or unchanged file,
 * never POST twice, and never hold the tree lock across a request.
 */
#include "tree_int.h"
#include "action.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void save_set_hidden(struct project *p, uint64_t id, int hidden)
{
	struct action **a = p ? tree_find_action(p, id) : NULL;

	if (a)
		(*a)->hidden = hidden;
}

/*
 * Installs the server's answer to a save as the action's content and as
 * the version the next save is compared with; @fname keeps reaching it.
 * Caller holds the lock. Returns the action's id, or 0.
 */
uint64_t save_install_answer(struct tree *t, uint64_t pid, cJSON *answer,
			     const char *fname)
{
	struct project *p = tree_find_project(t, pid);
	struct action *fresh = tree_action_from_json(answer);
	uint64_t id;

	if (!p || !fresh) {
		tree_action_free(fresh);
		return 0;
	}
	id = fresh->id;
	fresh->fetched = tree_now();
	fresh->base = blob_ref(fresh->content);
	tree_put_action(p, fresh);
	save_set_hidden(p, id, 0);
	{
		/* The kernel saw what was written, not the server's answer:
		 * the next reads must not trust the size it keeps. */
		struct action **a = tree_find_action(p, id);

		if (a) {
			(*a)->changed = (*a)->saved = tree_now();
			tree_kernel_unknown(*a);
		}
	}
	tree_note_saved(t);
	if (fname && strcmp(fname, fresh->fname))
		tree_alias(p, fname, id);
	return id;
}

/* Keeps the text of a failed update beside the action. Lock held. */
static void keep_rejected(struct tree *t, struct project *p,
			  const char *fname, const char *text, size_t len)
{
	char name[512];
	struct local *l;

	if (snprintf(name, sizeof(name), "%s.rejected", fname) >=
	    (int)sizeof(name))
		return;
	l = local_find(p, name);
	if (!l)
		l = local_new(t, p, name, S_IFREG | 0644);
	if (!l || local_set(t, l, text, len))
		log_error("%s/%s: cannot keep the rejected text: out of memory",
			  p->dname, fname);
}

/* The base as JSON: the version a save is compared with. */
static cJSON *base_json(struct tree *t, uint64_t pid, uint64_t aid,
			const struct blob *given)
{
	struct project *p = tree_find_project(t, pid);
	struct action **a = p ? tree_find_action(p, aid) : NULL;
	const struct blob *b = given;

	if (!b && a)
		b = (*a)->base ? (*a)->base : (*a)->content;
	return b ? cJSON_ParseWithLength(b->data, b->len) : NULL;
}

/*
 * The requests of an update: a GET for the conflict check, then the
 * PATCH. Runs without the lock. Returns 0 with *answer, or -errno with
 * @why filled.
 */
static int send_update(struct tree *t, uint64_t pid, uint64_t aid,
		       const cJSON *base, cJSON *patch, int restore,
		       cJSON **answer, char *why, size_t whylen)
{
	struct api_err e = {0};
	cJSON *server = NULL;
	char fields[256];
	int rc;

	rc = api_get_action(t->api, pid, aid, &server, &e);
	if (rc) {
		snprintf(why, whylen, "%s", e.msg);
		return rc;
	}
	if (!restore &&
	    cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(server, "deleted"))) {
		cJSON_Delete(server);
		snprintf(why, whylen, "the action was deleted on the server");
		return -ENOENT;
	}
	if (base && action_conflicts(base, server, patch, fields,
				     sizeof(fields))) {
		cJSON_Delete(server);
		snprintf(why, whylen,
			 "conflict: changed on the server since it was read: "
			 "%s",
			 fields);
		return -ESTALE;
	}
	cJSON_Delete(server);
	if (restore) {
		/* The diff against the deleted version may hold it already. */
		cJSON_DeleteItemFromObjectCaseSensitive(patch, "deleted");
		if (!cJSON_AddFalseToObject(patch, "deleted"))
			return -ENOMEM;
	}
	rc = api_patch_action(t->api, pid, aid, patch, answer, &e);
	if (rc)
		snprintf(why, whylen, "%s", e.msg);
	return rc;
}

/* The ids of the live actions known before a POST: a lost answer is
 * never taken to be one of them. */
static uint64_t *known_ids(const struct project *p, size_t *n)
{
	uint64_t *ids = malloc((p->nacts ? p->nacts : 1) * sizeof(*ids));

	*n = 0;
	for (size_t i = 0; ids && i < p->nacts; i++)
		ids[(*n)++] = p->acts[i]->id;
	return ids;
}

int save_text(struct tree *t, uint64_t pid, const char *fname, uint64_t aid,
	      int restore, const struct blob *given, const char *text,
	      size_t len, uint64_t *saved)
{
	struct project *p = tree_find_project(t, pid);
	cJSON *base = NULL, *edit = NULL, *body = NULL, *answer = NULL;
	struct api_err e = {0};
	char why[512] = "";
	char *name = strdup(fname);
	uint64_t *known = NULL;
	size_t nknown = 0;
	int rc = 0, oom = 0, changed = 1;

	if (!p || !name) {
		free(name);
		return p ? -ENOMEM : -ENOENT;
	}
	if (aid)
		base = base_json(t, pid, aid, given);
	else
		known = known_ids(p, &nknown);
	pthread_mutex_unlock(&t->lock);

	edit = action_parse(text, len, base, why, sizeof(why));
	if (!edit) {
		rc = -EINVAL;
	} else if (aid) {
		body = action_diff(base, edit, &oom);
		if (oom) {
			rc = -ENOMEM;
		} else if (!body && !restore) {
			changed = 0; /* what the server has: nothing to send */
		} else {
			if (!body)
				body = cJSON_CreateObject();
			rc = body ? send_update(t, pid, aid, base, body, restore,
						&answer, why, sizeof(why))
				  : -ENOMEM;
		}
	} else {
		char *fallback = names_from_file(name, 0);

		body = action_create_body(edit, fallback);
		free(fallback);
		rc = body ? api_create_action(t->api, pid, body, known, nknown,
					      &answer, &e)
			  : -ENOMEM;
		if (rc)
			snprintf(why, sizeof(why), "%s", e.msg);
	}

	pthread_mutex_lock(&t->lock);
	p = tree_find_project(t, pid);
	if (!rc && changed) {
		*saved = save_install_answer(t, pid, answer, name);
		if (!*saved)
			rc = -EIO;
	} else if (!rc) {
		*saved = aid;
		save_set_hidden(p, aid, 0);
		if (p)
			tree_alias(p, name, aid);
	}
	if (!rc) {
		t->saves++;
		if (changed)
			log_info("%s/%s: saved", p ? p->dname : "?", name);
	} else {
		if (rc == -ENOMEM)
			snprintf(why, sizeof(why), "out of memory");
		t->saves_failed++;
		if (rc == -ESTALE)
			t->conflicts++;
		log_error("%s/%s: not saved: %s", p ? p->dname : "?", name,
			  why);
		if (aid && p)
			keep_rejected(t, p, name, text, len);
	}
	cJSON_Delete(base);
	cJSON_Delete(edit);
	cJSON_Delete(body);
	cJSON_Delete(answer);
	free(known);
	free(name);
	return rc;
}

/* The file name part of "project/file". */
static const char *base_name(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? slash + 1 : path;
}

/*
 * What a record name without a live action stands for: a hidden live
 * action, a soft-deleted one (restored on save), or nothing (a new
 * action). May GET the action; lock held, dropped meanwhile.
 */
int save_bind_record(struct tree *t, uint64_t pid, const char *name,
		     uint64_t *bound, int *restore, struct blob **base)
{
	struct api_err e = {0};
	struct project *p = tree_find_project(t, pid);
	struct action **a;
	cJSON *item = NULL;
	uint64_t id = 0;
	char *text;
	size_t len;
	int rc;

	*bound = 0;
	*restore = 0;
	*base = NULL;
	/* A name a file was created or renamed under keeps its action. */
	for (size_t i = 0; i < p->naliases; i++)
		if (!strcmp(p->aliases[i].name, name))
			id = p->aliases[i].id;
	if (!id && names_classify(name, &id) != NAMES_RECORD_ID)
		return 0;
	a = tree_find_action(p, id);
	if (a) {
		*bound = id;
		return 0;
	}
	pthread_mutex_unlock(&t->lock);
	rc = api_get_action(t->api, pid, id, &item, &e);
	pthread_mutex_lock(&t->lock);
	if (rc == -ENOENT)
		return 0;
	if (rc) {
		log_error("%s: cannot tell whether action %llu exists: %s",
			  name, (unsigned long long)id, e.msg);
		return rc;
	}
	text = action_render(item, &len);
	*base = text ? blob_new(text, len) : NULL;
	free(text);
	*restore = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(item, "deleted"));
	*bound = id;
	cJSON_Delete(item);
	return *base ? 0 : -ENOMEM;
}

int save_is_root_file(const char *path)
{
	while (*path == '/')
		path++;
	return !strchr(path, '/');
}

int tree_create(struct tree *t, const char *path, mode_t mode, int flags,
		struct tree_open_result *out)
{
	struct tree_handle *h;
	struct project *p;
	struct local *l;
	struct node n;
	uint64_t bound = 0;
	struct blob *base = NULL;
	int restore = 0, rc;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&t->lock);
	rc = tree_resolve(t, path, &n);
	if (!rc) {
		pthread_mutex_unlock(&t->lock);
		if (flags & O_EXCL)
			return -EEXIST;
		return tree_open(t, path, flags, out);
	}
	if (n.kind != NODE_NONE) {
		pthread_mutex_unlock(&t->lock);
		return rc == -ENOENT && save_is_root_file(path) ? -EPERM : rc;
	}
	if (t->opts.ro) {
		pthread_mutex_unlock(&t->lock);
		return -EROFS;
	}
	rc = save_bind_record(t, n.pid, n.name, &bound, &restore, &base);
	p = tree_find_project(t, n.pid);
	h = calloc(1, sizeof(*h));
	if (!rc && (!p || !h))
		rc = p ? -ENOMEM : -ENOENT;
	l = rc ? NULL : local_find(p, n.name);
	if (!rc && !l) {
		l = local_new(t, p, n.name, S_IFREG | (mode & 0777));
		if (!l)
			rc = -ENOMEM;
	}
	if (!rc) {
		l->bound = bound;
		l->restore = restore;
		if (!l->base)
			l->base = base ? blob_ref(base) : NULL;
		l->refs++;
		h->t = t;
		h->kind = H_LOCAL;
		h->append = !!(flags & O_APPEND);
		h->pid = n.pid;
		h->local = l;
		snprintf(h->fname, sizeof(h->fname), "%s", path + 1);
		tree_handle_register(t, h);
		out->handle = h;
		out->direct_io = 1;
	} else {
		free(h);
	}
	blob_unref(base);
	pthread_mutex_unlock(&t->lock);
	return rc;
}

ssize_t tree_write(struct tree_handle *h, const char *buf, size_t size,
		   off_t off)
{
	struct tree *t = h->t;
	ssize_t rc;

	if (off < 0)
		return -EINVAL;
	pthread_mutex_lock(&t->lock);
	if (h->kind == H_LOCAL) {
		if (h->append)
			off = (off_t)h->local->len;
		rc = local_write(t, h->local, buf, size, off);
	} else if (h->kind == H_ACTION) {
		size_t end;

		if (h->append)
			off = (off_t)h->len;
		end = (size_t)off + size;
		rc = (ssize_t)size;
		if (end > LOCAL_FILE_MAX) {
			rc = -ENOSPC;
		} else if (end > h->cap) {
			size_t cap = h->cap ? h->cap * 2 : 4096;
			char *grown;

			while (cap < end)
				cap *= 2;
			grown = realloc(h->buf, cap);
			if (grown) {
				h->buf = grown;
				h->cap = cap;
			} else {
				rc = -ENOMEM;
			}
		}
		if (rc > 0) {
			if ((size_t)off > h->len)
				memset(h->buf + h->len, 0, (size_t)off - h->len);
			memcpy(h->buf + off, buf, size);
			if (end > h->len)
				h->len = end;
		}
	} else {
		rc = -EBADF;
	}
	if (rc > 0)
		h->dirty = 1;
	pthread_mutex_unlock(&t->lock);
	return rc;
}

int tree_ftruncate(struct tree_handle *h, off_t size)
{
	struct tree *t = h->t;
	int rc = 0;

	if (size < 0)
		return -EINVAL;
	pthread_mutex_lock(&t->lock);
	if (h->kind == H_LOCAL) {
		rc = local_truncate(t, h->local, size);
	} else if (h->kind == H_ACTION) {
		if ((size_t)size > LOCAL_FILE_MAX) {
			rc = -ENOSPC;
		} else if ((size_t)size > h->len) {
			char *grown = realloc(h->buf, (size_t)size);

			if (!grown) {
				rc = -ENOMEM;
			} else {
				memset(grown + h->len, 0, (size_t)size - h->len);
				h->buf = grown;
				h->cap = (size_t)size;
			}
		}
		if (!rc)
			h->len = (size_t)size;
	} else {
		rc = -EBADF;
	}
	if (!rc)
		h->dirty = 1;
	pthread_mutex_unlock(&t->lock);
	return rc;
}

/* Saves a local record file's content; on success the name becomes the
 * action's and @h (if any) follows it. Lock held. */
static int save_local(struct tree *t, uint64_t pid, struct local *l,
		      struct tree_handle *h)
{
	struct project *p;
	uint64_t id = 0;
	char *text;
	size_t len = l->len;
	int rc;

	text = malloc(len + 1);
	if (!text)
		return -ENOMEM;
	memcpy(text, l->data, len);
	l->refs++; /* stays alive while the lock is dropped */
	rc = save_text(t, pid, l->name, l->bound, l->restore, l->base, text,
		       len, &id);
	p = tree_find_project(t, pid);
	if (!rc) {
		l->saved_once = 1;
		if (h) {
			struct action *a;

			h->kind = H_ACTION;
			h->aid = id;
			h->buf = text;
			h->len = h->cap = len;
			text = NULL;
			h->local = NULL;
			local_unref(t, l); /* the handle's reference */
			a = tree_handle_action(t, h);
			if (a)
				kernel_writer(a, h);
		}
		if (p && l->linked)
			local_unlink(t, p, l);
	}
	local_unref(t, l);
	free(text);
	return rc;
}

int tree_flush(struct tree_handle *h)
{
	struct tree *t = h->t;
	uint64_t id;
	int rc = 0;

	pthread_mutex_lock(&t->lock);
	if (!h->dirty || t->opts.ro) {
		pthread_mutex_unlock(&t->lock);
		return 0;
	}
	/* Saved, unchanged or refused: the kernel has the size written. */
	tree_note_saved(t);
	if (h->kind == H_ACTION && h->len) {
		char *text = malloc(h->len);
		size_t len = h->len;

		if (!text) {
			rc = -ENOMEM;
		} else {
			memcpy(text, h->buf, len);
			rc = save_text(t, h->pid, base_name(h->fname), h->aid, 0,
				       NULL, text, len, &id);
			free(text);
		}
		if (!rc && len == h->len)
			h->dirty = 0;
	} else if (h->kind == H_LOCAL) {
		struct local *l = h->local;
		uint64_t ignored;

		if (names_classify(l->name, &ignored) == NAMES_SCRATCH ||
		    !l->linked)
			h->dirty = 0; /* held in memory only */
		else if (l->len)
			rc = save_local(t, h->pid, l, h);
		if (!rc)
			h->dirty = 0;
	}
	pthread_mutex_unlock(&t->lock);
	return rc;
}

int tree_truncate(struct tree *t, const char *path, off_t size)
{
	struct node n;
	struct action **a;
	uint64_t id;
	int rc;

	pthread_mutex_lock(&t->lock);
	rc = tree_resolve(t, path, &n);
	if (!rc && n.kind == NODE_LOCAL) {
		rc = local_truncate(t, n.local, size);
	} else if (!rc && n.kind == NODE_ACTION) {
		tree_forget_pages(t, n.pid, n.aid);
		a = tree_find_action(tree_find_project(t, n.pid), n.aid);
		/* An empty file is never sent; a cut is a save. */
		if (size && (size_t)size != (*a)->content->len) {
			size_t len = (size_t)size;
			char *text = calloc(1, len);

			if (!text) {
				rc = -ENOMEM;
			} else {
				memcpy(text, (*a)->content->data,
				       len < (*a)->content->len
					       ? len
					       : (*a)->content->len);
				rc = save_text(t, n.pid, n.name, n.aid, 0, NULL,
					       text, len, &id);
				free(text);
			}
		}
	} else if (!rc) {
		rc = -EISDIR;
	}
	pthread_mutex_unlock(&t->lock);
	return rc;
}

/* PATCHes one field set of an action outside a file save (rm, mv). */
