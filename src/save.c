/*
 * save: every change to the tree. Writes into buffers, and the moments
 * they become requests: a flush of a dirty handle, a rename onto an
 * action name, an unlink of an action. DESIGN.md "Saving" and
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

static void set_hidden(struct project *p, uint64_t id, int hidden)
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
static uint64_t install_answer(struct tree *t, uint64_t pid, cJSON *answer,
			       const char *fname)
{
	struct project *p = tree_find_project(t, pid);
	struct action *fresh = tree_action_from_json(answer);
	uint64_t id;

	if (!p || !fresh) {
		free(fresh);
		return 0;
	}
	id = fresh->id;
	fresh->fetched = tree_now();
	fresh->base = blob_ref(fresh->content);
	tree_put_action(p, fresh);
	set_hidden(p, id, 0);
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
		*saved = install_answer(t, pid, answer, name);
		if (!*saved)
			rc = -EIO;
	} else if (!rc) {
		*saved = aid;
		set_hidden(p, aid, 0);
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
static int bind_record(struct tree *t, uint64_t pid, const char *name,
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

static int is_root_file(const char *path)
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
		return rc == -ENOENT && is_root_file(path) ? -EPERM : rc;
	}
	if (t->opts.ro) {
		pthread_mutex_unlock(&t->lock);
		return -EROFS;
	}
	rc = bind_record(t, n.pid, n.name, &bound, &restore, &base);
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
			h->kind = H_ACTION;
			h->aid = id;
			h->buf = text;
			h->len = h->cap = len;
			text = NULL;
			h->local = NULL;
			local_unref(t, l); /* the handle's reference */
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
static int patch_action(struct tree *t, uint64_t pid, uint64_t aid,
			cJSON *body, const char *what, const char *fname)
{
	struct project *p = tree_find_project(t, pid);
	char dname[NAMES_FILE_MAX];
	struct api_err e = {0};
	cJSON *answer = NULL;
	int rc;

	snprintf(dname, sizeof(dname), "%s", p ? p->dname : "?");
	pthread_mutex_unlock(&t->lock);
	rc = api_patch_action(t->api, pid, aid, body, &answer, &e);
	pthread_mutex_lock(&t->lock);
	if (rc) {
		log_error("%s/%s: not %s: %s", dname, fname, what, e.msg);
	} else {
		log_notice("%s/%s: %s", dname, fname, what);
		if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(answer,
								  "deleted"))) {
			p = tree_find_project(t, pid);
			if (p)
				tree_drop_action(p, aid);
		} else {
			install_answer(t, pid, answer, NULL);
		}
	}
	cJSON_Delete(answer);
	return rc;
}

/* A local file detached from an action is going away: show it again. */
static void drop_local(struct tree *t, struct project *p, struct local *l)
{
	if (l->detached)
		set_hidden(p, l->detached, 0);
	local_unlink(t, p, l);
}

int tree_unlink(struct tree *t, const char *path)
{
	struct node n;
	cJSON *body;
	int rc;

	pthread_mutex_lock(&t->lock);
	rc = tree_resolve(t, path, &n);
	if (!rc && t->opts.ro)
		rc = -EROFS;
	if (!rc && n.kind == NODE_LOCAL) {
		drop_local(t, tree_find_project(t, n.pid), n.local);
	} else if (!rc && n.kind == NODE_ACTION) {
		char fname[NAMES_FILE_MAX * 4];

		snprintf(fname, sizeof(fname), "%s", n.name);
		body = cJSON_CreateObject();
		if (!body || !cJSON_AddTrueToObject(body, "deleted"))
			rc = -ENOMEM;
		else
			rc = patch_action(t, n.pid, n.aid, body, "deleted",
					  fname);
		cJSON_Delete(body);
	} else if (!rc) {
		rc = n.kind == NODE_PROJECT ? -EPERM : -EISDIR;
	}
	pthread_mutex_unlock(&t->lock);
	return rc;
}

/* rename(action, scratch name): a local copy; the server is untouched. */
static int detach_action(struct tree *t, struct node *src, struct node *dst)
{
	struct project *p = tree_find_project(t, src->pid);
	struct action *a = *tree_find_action(p, src->aid);
	struct local *l;
	int rc;

	if (dst->kind == NODE_LOCAL)
		drop_local(t, p, dst->local);
	l = local_new(t, p, dst->name, S_IFREG | 0644);
	if (!l)
		return -ENOMEM;
	/* The copy is the version the editor read: renaming it back
	 * unchanged sends nothing, and later saves compare with it. */
	if (!a->base)
		a->base = blob_ref(a->content);
	rc = local_set(t, l, a->base->data, a->base->len);
	if (rc) {
		local_unlink(t, p, l);
		return rc;
	}
	l->mtime = a->mtime;
	l->detached = a->id;
	a->hidden = 1;
	return 0;
}

/* rename(action, other action name): renames the action. */
static int rename_action(struct tree *t, struct node *src, struct node *dst)
{
	struct project *p = tree_find_project(t, src->pid);
	enum names_kind kind;
	uint64_t id = 0;
	char *name;
	cJSON *body;
	int rc;

	if (dst->kind == NODE_LOCAL ||
	    (dst->kind == NODE_ACTION && dst->aid != src->aid))
		return -EPERM; /* would destroy another file's action */
	kind = names_classify(dst->name, &id);
	if (kind == NAMES_RECORD_ID && id != src->aid &&
	    tree_find_action(p, id))
		return -EPERM;
	name = names_from_file(dst->name, kind == NAMES_RECORD_ID);
	if (!name)
		return -ENOMEM;
	if (kind == NAMES_RECORD_ID && !strchr(dst->name, '-')) {
		/* "<id>.json": the same action, its name unchanged. */
		tree_alias(p, dst->name, src->aid);
		free(name);
		return 0;
	}
	body = cJSON_CreateObject();
	if (!body || !cJSON_AddStringToObject(body, "name", name)) {
		rc = -ENOMEM;
	} else {
		char fname[NAMES_FILE_MAX * 4];

		snprintf(fname, sizeof(fname), "%s", src->name);
		rc = patch_action(t, src->pid, src->aid, body, "renamed",
				  fname);
		p = tree_find_project(t, src->pid);
		if (!rc && p)
			tree_alias(p, dst->name, src->aid);
	}
	cJSON_Delete(body);
	free(name);
	return rc;
}

/* rename(local, action name): saves the local content as that action. */
static int rename_onto_record(struct tree *t, struct node *src,
			      struct node *dst, const char *dname)
{
	struct project *p;
	struct local *l = src->local, *target = NULL;
	struct blob *base = NULL;
	uint64_t bound = 0, id = 0;
	int restore = 0, rc = 0;
	char *text = NULL, *name;
	size_t len;

	l->refs++; /* alive while a request drops the lock */
	if (dst->kind == NODE_ACTION) {
		bound = dst->aid;
	} else if (dst->kind == NODE_LOCAL) {
		target = dst->local;
		bound = target->bound;
		restore = target->restore;
		base = target->base ? blob_ref(target->base) : NULL;
	} else {
		rc = bind_record(t, src->pid, dname, &bound, &restore, &base);
		if (!rc && !l->linked)
			rc = -ENOENT; /* removed while the lock was dropped */
	}
	p = tree_find_project(t, src->pid);
	if (!rc && !p)
		rc = -ENOENT;
	if (rc)
		goto out;
	if (!l->len) {
		/* Nothing to send: it stays a local file under the name. */
		if (dst->kind == NODE_ACTION) {
			rc = -EINVAL;
			goto out;
		}
		name = strdup(dname);
		if (!name) {
			rc = -ENOMEM;
			goto out;
		}
		if (target)
			drop_local(t, p, target);
		free(l->name);
		l->name = name;
		l->bound = bound;
		l->restore = restore;
		goto out;
	}
	text = malloc(l->len);
	if (!text) {
		rc = -ENOMEM;
		goto out;
	}
	len = l->len;
	memcpy(text, l->data, len);
	/* The source stays until the save succeeds; the target too. */
	if (target)
		target->refs++;
	rc = save_text(t, src->pid, dname, bound, restore, base, text, len,
		       &id);
	/* The renamed inode holds the size written, saved or not. */
	tree_forget_pages(t, src->pid, bound);
	p = tree_find_project(t, src->pid);
	if (!rc && p) {
		if (l->linked)
			drop_local(t, p, l);
		if (target && target->linked)
			local_unlink(t, p, target);
	}
	if (target)
		local_unref(t, target);
out:
	local_unref(t, l);
	blob_unref(base);
	free(text);
	return rc;
}

int tree_rename(struct tree *t, const char *from, const char *to,
		unsigned int flags)
{
	struct node src, dst;
	struct project *p;
	uint64_t ignored;
	int rc, dst_rc;

	if (flags & ~(unsigned int)RENAME_NOREPLACE)
		return -EINVAL;
	pthread_mutex_lock(&t->lock);
	rc = tree_resolve(t, from, &src);
	if (!rc && t->opts.ro)
		rc = -EROFS;
	if (!rc && src.kind != NODE_LOCAL && src.kind != NODE_ACTION)
		rc = -EPERM;
	if (rc)
		goto out;
	dst_rc = tree_resolve(t, to, &dst);
	if (dst_rc && dst.kind != NODE_NONE) {
		rc = dst_rc;
		goto out;
	}
	if (!dst_rc && dst.kind != NODE_LOCAL && dst.kind != NODE_ACTION) {
		rc = -EISDIR;
		goto out;
	}
	if (dst.pid != src.pid) {
		rc = -EXDEV;
		goto out;
	}
	if (!dst_rc && (flags & RENAME_NOREPLACE)) {
		rc = -EEXIST;
		goto out;
	}
	if (!dst_rc && dst.kind == src.kind &&
	    (src.kind == NODE_LOCAL ? src.local == dst.local
				    : src.aid == dst.aid) &&
	    !strcmp(src.name, dst.name))
		goto out; /* onto itself */
	p = tree_find_project(t, src.pid);

	if (names_classify(dst.name, &ignored) == NAMES_SCRATCH) {
		if (src.kind == NODE_ACTION) {
			rc = detach_action(t, &src, &dst);
		} else {
			char *name = strdup(dst.name);

			if (!name) {
				rc = -ENOMEM;
				goto out;
			}
			if (dst.kind == NODE_LOCAL)
				drop_local(t, p, dst.local);
			free(src.local->name);
			src.local->name = name;
		}
	} else if (src.kind == NODE_ACTION) {
		rc = rename_action(t, &src, &dst);
	} else {
		char *dname = strdup(dst.name);

		rc = dname ? rename_onto_record(t, &src, &dst, dname) : -ENOMEM;
		free(dname);
	}
out:
	pthread_mutex_unlock(&t->lock);
	return rc;
}

/* A new local file for symlink() and link(): scratch names only. */
static int new_scratch(struct tree *t, const char *path, mode_t mode,
		       const char *data, size_t len)
{
	struct node n;
	struct local *l;
	uint64_t ignored;
	int rc;

	pthread_mutex_lock(&t->lock);
	rc = tree_resolve(t, path, &n);
	if (!rc)
		rc = -EEXIST;
	else if (n.kind != NODE_NONE)
		rc = rc == -ENOENT && is_root_file(path) ? -EPERM : rc;
	else if (t->opts.ro)
		rc = -EROFS;
	else if (names_classify(n.name, &ignored) != NAMES_SCRATCH)
		rc = -EPERM;
	else if (!(l = local_new(t, tree_find_project(t, n.pid), n.name,
				 mode)))
		rc = -ENOMEM;
	else if ((rc = local_set(t, l, data, len)))
		local_unlink(t, tree_find_project(t, n.pid), l);
	pthread_mutex_unlock(&t->lock);
	return rc;
}

int tree_symlink(struct tree *t, const char *target, const char *path)
{
	return new_scratch(t, path, S_IFLNK | 0777, target, strlen(target));
}

int tree_readlink(struct tree *t, const char *path, char *buf, size_t size)
{
	struct node n;
	size_t len;
	int rc;

	if (!size)
		return -EINVAL;
	pthread_mutex_lock(&t->lock);
	rc = tree_resolve(t, path, &n);
	if (!rc && (n.kind != NODE_LOCAL ||
		    (n.local->mode & S_IFMT) != S_IFLNK))
		rc = -EINVAL;
	if (!rc) {
		len = n.local->len < size - 1 ? n.local->len : size - 1;
		memcpy(buf, n.local->data, len);
		buf[len] = '\0';
	}
	pthread_mutex_unlock(&t->lock);
	return rc;
}

int tree_link(struct tree *t, const char *from, const char *to)
{
	struct node n;
	char *copy = NULL;
	size_t len = 0;
	mode_t mode = 0;
	int rc;

	pthread_mutex_lock(&t->lock);
	rc = tree_resolve(t, from, &n);
	if (!rc && n.kind != NODE_LOCAL)
		rc = -EPERM; /* an action has one name on the server */
	if (!rc) {
		len = n.local->len;
		mode = n.local->mode;
		copy = malloc(len + 1);
		if (!copy)
			rc = -ENOMEM;
		else
			memcpy(copy, n.local->data, len);
	}
	pthread_mutex_unlock(&t->lock);
	if (!rc)
		rc = new_scratch(t, to, mode, copy, len);
	free(copy);
	return rc;
}

int tree_chmod(struct tree *t, const char *path, mode_t mode)
{
	struct node n;
	int rc;

	pthread_mutex_lock(&t->lock);
	rc = tree_resolve(t, path, &n);
	if (!rc && t->opts.ro)
		rc = -EROFS;
	/* On action files and directories: accepted, nothing changes. */
	if (!rc && n.kind == NODE_LOCAL)
		n.local->mode = (n.local->mode & S_IFMT) | (mode & 07777);
	pthread_mutex_unlock(&t->lock);
	return rc;
}

int tree_utimens(struct tree *t, const char *path, const struct timespec tv[2])
{
	struct node n;
	int rc;

	pthread_mutex_lock(&t->lock);
	rc = tree_resolve(t, path, &n);
	if (!rc && t->opts.ro)
		rc = -EROFS;
	if (!rc && n.kind == NODE_LOCAL && tv) {
		if (tv[1].tv_nsec == UTIME_NOW)
			clock_gettime(CLOCK_REALTIME, &n.local->mtime);
		else if (tv[1].tv_nsec != UTIME_OMIT)
			n.local->mtime = tv[1];
	}
	pthread_mutex_unlock(&t->lock);
	return rc;
}
