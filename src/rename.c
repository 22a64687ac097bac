/*
 * rename: changes of names. rename (of an action: a PATCH of its name;
 * of a scratch file onto an action name: a save), unlink (a soft delete),
 * link and symlink (scratch names only), and the mode and times a file
 * can be given. DESIGN.md "Creating, renaming, removing" is the rule;
 * editor-saves.md is why.
 *
 * Must never destroy another file's action, and never hold the tree lock
 * across a request.
 */
#include "tree_int.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Resolves @path for a change: -EROFS on a read-only mount. Lock held. */
static int resolve_change(struct tree *t, const char *path, struct node *n)
{
	int rc = tree_resolve(t, path, n);

	return !rc && t->opts.ro ? -EROFS : rc;
}

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
			save_install_answer(t, pid, answer, NULL);
		}
	}
	cJSON_Delete(answer);
	return rc;
}

/* A local file detached from an action is going away: show it again. */
static void drop_local(struct tree *t, struct project *p, struct local *l)
{
	if (l->detached)
		save_set_hidden(p, l->detached, 0);
	local_unlink(t, p, l);
}

int tree_unlink(struct tree *t, const char *path)
{
	struct node n;
	cJSON *body;
	int rc;

	pthread_mutex_lock(&t->lock);
	rc = resolve_change(t, path, &n);
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
		rc = save_bind_record(t, src->pid, dname, &bound, &restore, &base);
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
	rc = resolve_change(t, from, &src);
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
		rc = rc == -ENOENT && save_is_root_file(path) ? -EPERM : rc;
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
	rc = resolve_change(t, path, &n);
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
	rc = resolve_change(t, path, &n);
	if (!rc && n.kind == NODE_LOCAL && tv) {
		if (tv[1].tv_nsec == UTIME_NOW)
			clock_gettime(CLOCK_REALTIME, &n.local->mtime);
		else if (tv[1].tv_nsec != UTIME_OMIT)
			n.local->mtime = tv[1];
	}
	pthread_mutex_unlock(&t->lock);
	return rc;
}
