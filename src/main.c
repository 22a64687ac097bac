/*
 * main: options, the key, the check before mounting, and the FUSE loop.
 *
 * Nothing is mounted until the server has accepted the host and key.
 * The key is taken from the environment or a private file, never from
 * the command line, and never printed.
 */
#include "api.h"
#include "http.h"
#include "log.h"
#include "ops.h"
#include "tree.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_HOST "https://us.posthog.com"

struct phfs_conf {
	char *key_file;
	char *project;
	char *cacert;
	char *ttl_arg;
	char *timeout_arg;
	char *retries_arg;
	double ttl;
	double timeout;
	int retries;
	int ro;
	int show_help;
	int show_version;
	int key_given;
	char *args[3];
	int nargs;
};

enum {
	KEY_HELP,
	KEY_VERSION,
	KEY_RO,
	KEY_KEY,
	KEY_FSTAB,
};

#define PHFS_OPT(t, p) {t, offsetof(struct phfs_conf, p), 1}

static const struct fuse_opt phfs_opts[] = {
	PHFS_OPT("key_file=%s", key_file),
	PHFS_OPT("project=%s", project),
	PHFS_OPT("cacert=%s", cacert),
	PHFS_OPT("ttl=%s", ttl_arg),
	PHFS_OPT("timeout=%s", timeout_arg),
	PHFS_OPT("retries=%s", retries_arg),
	FUSE_OPT_KEY("ro", KEY_RO),
	FUSE_OPT_KEY("key=", KEY_KEY),
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	/* Options only fstab and mount(8) care about. */
	FUSE_OPT_KEY("_netdev", KEY_FSTAB),
	FUSE_OPT_KEY("noauto", KEY_FSTAB),
	FUSE_OPT_KEY("auto", KEY_FSTAB),
	FUSE_OPT_KEY("user", KEY_FSTAB),
	FUSE_OPT_KEY("nouser", KEY_FSTAB),
	FUSE_OPT_KEY("users", KEY_FSTAB),
	FUSE_OPT_KEY("owner", KEY_FSTAB),
	FUSE_OPT_KEY("nofail", KEY_FSTAB),
	FUSE_OPT_KEY("defaults", KEY_FSTAB),
	FUSE_OPT_KEY("comment=", KEY_FSTAB),
	FUSE_OPT_KEY("x-systemd.", KEY_FSTAB),
	FUSE_OPT_END,
};

static int opt_proc(void *data, const char *arg, int key,
		    struct fuse_args *outargs)
{
	struct phfs_conf *c = data;

	(void)outargs;
	switch (key) {
	case FUSE_OPT_KEY_NONOPT:
		if (c->nargs >= 2) {
			fprintf(stderr, "phfs: unexpected argument '%s'\n",
				arg);
			return -1;
		}
		c->args[c->nargs++] = strdup(arg);
		return 0;
	case KEY_HELP:
		c->show_help = 1;
		return 0;
	case KEY_VERSION:
		c->show_version = 1;
		return 0;
	case KEY_RO:
		c->ro = 1;
		return 1; /* the kernel gets it too */
	case KEY_KEY:
		c->key_given = 1;
		return 0;
	case KEY_FSTAB:
		return 0;
	default:
		return 1;
	}
}

static void usage(const char *prog)
{
	printf("usage: %s [OPTIONS] [HOST] MOUNTPOINT\n"
	       "\n"
	       "Mounts the PostHog actions of your projects as JSON files.\n"
	       "HOST is a base URL or 'us' / 'eu' (default: $POSTHOG_HOST, "
	       "else " DEFAULT_HOST ").\n"
	       "The key comes from $POSTHOG_PERSONAL_API_KEY or -o "
	       "key_file=PATH.\n"
	       "\n"
	       "phfs options:\n"
	       "    -o key_file=PATH       file holding the personal API key "
	       "(mode 0600 or stricter)\n"
	       "    -o project=ID[:ID...]  only these projects; '@current' "
	       "allowed (default: all)\n"
	       "    -o ttl=SECONDS         trust a listing or action this "
	       "long (default: 10; 0 = always fetch)\n"
	       "    -o timeout=SECONDS     deadline of one operation, "
	       "retries included (default: 30)\n"
	       "    -o retries=N           retries after the first attempt "
	       "(default: 4)\n"
	       "    -o cacert=PATH         CA bundle for a private CA "
	       "(default: the system's)\n"
	       "    -o ro                  read-only mount\n"
	       "\n"
	       "general options:\n"
	       "    -f                     stay in the foreground, log to "
	       "stderr\n"
	       "    -d                     debug output (implies -f; secrets "
	       "redacted)\n"
	       "    -s                     single-threaded\n"
	       "    -h, --help             this help\n"
	       "    -V, --version          versions of phfs, libfuse, "
	       "libcurl and cJSON\n"
	       "\n",
	       prog);
}

static void version(void)
{
	printf("phfs %s\nlibfuse %s\nlibcurl %s\ncJSON %s\n", PHFS_VERSION,
	       fuse_pkgversion(), http_curl_version(), cJSON_Version());
}

static int is_loopback(const char *host, size_t len)
{
	char h[64];
	struct in_addr a4;

	if (len == 0 || len >= sizeof(h))
		return 0;
	memcpy(h, host, len);
	h[len] = '\0';
	if (!strcmp(h, "localhost") || !strcmp(h, "[::1]"))
		return 1;
	return inet_pton(AF_INET, h, &a4) == 1 &&
	       (ntohl(a4.s_addr) >> 24) == 127;
}

/*
 * The base URL for HOST: shortcuts expanded, trailing '/' removed,
 * https required except for loopback. Returns a malloc'ed string or
 * NULL with a message printed.
 */
static char *base_url(const char *host)
{
	const char *rest;
	size_t hostlen;
	char *url;

	if (!strcmp(host, "us"))
		host = "https://us.posthog.com";
	else if (!strcmp(host, "eu"))
		host = "https://eu.posthog.com";
	if (!strncmp(host, "https://", 8)) {
		rest = host + 8;
	} else if (!strncmp(host, "http://", 7)) {
		rest = host + 7;
		if (rest[0] == '[')
			hostlen = strcspn(rest, "]") + 1;
		else
			hostlen = strcspn(rest, ":/");
		if (!is_loopback(rest, hostlen)) {
			fprintf(stderr,
				"phfs: refusing plain http:// to '%.*s': the "
				"key would cross the network unencrypted; use "
				"https://\n",
				(int)hostlen, rest);
			return NULL;
		}
	} else {
		fprintf(stderr,
			"phfs: HOST must be 'us', 'eu' or a URL starting with "
			"https:// (got '%s')\n",
			host);
		return NULL;
	}
	if (!*rest || strpbrk(host, " \t\r\n?#")) {
		fprintf(stderr, "phfs: HOST '%s' is not a valid URL\n", host);
		return NULL;
	}
	url = strdup(host);
	while (url && strlen(url) > 8 && url[strlen(url) - 1] == '/')
		url[strlen(url) - 1] = '\0';
	return url;
}

/* Reads the key from a private file. NULL with a message on error. */
static char *read_key_file(const char *path)
{
	struct stat st;
	char buf[512];
	size_t n;
	FILE *f = fopen(path, "r");

	if (!f) {
		fprintf(stderr, "phfs: cannot read key file %s: %s\n", path,
			strerror(errno));
		return NULL;
	}
	if (fstat(fileno(f), &st) || (st.st_mode & 077)) {
		fprintf(stderr,
			"phfs: key file %s is readable by group or others; "
			"run chmod 600 %s\n",
			path, path);
		fclose(f);
		return NULL;
	}
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strdup(buf);
}

/* Trims white space; NULL when nothing is left or it has inner space. */
static char *clean_key(char *key)
{
	char *s = key, *e;

	if (!key)
		return NULL;
	while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' ||
			 e[-1] == '\r'))
		e--;
	*e = '\0';
	if (!*s || strpbrk(s, " \t\r\n")) {
		memset(key, 0, strlen(key));
		free(key);
		return NULL;
	}
	memmove(key, s, strlen(s) + 1);
	return key;
}

/* Splits "1:2:@current" into an array. */
static char **split_projects(const char *spec, size_t *n)
{
	char *copy = strdup(spec), *save = NULL, *tok;
	char **out = calloc(strlen(spec) / 2 + 2, sizeof(*out));

	*n = 0;
	if (!copy || !out) {
		free(copy);
		free(out);
		return NULL;
	}
	for (tok = strtok_r(copy, ":", &save); tok;
	     tok = strtok_r(NULL, ":", &save)) {
		if (strcmp(tok, "@current") && strspn(tok, "0123456789") !=
							strlen(tok)) {
			fprintf(stderr,
				"phfs: -o project= takes project ids or "
				"@current, separated by ':' (got '%s')\n",
				tok);
			for (size_t i = 0; i < *n; i++)
				free(out[i]);
			free(out);
			free(copy);
			return NULL;
		}
		out[(*n)++] = strdup(tok);
	}
	free(copy);
	if (!*n) {
		fprintf(stderr, "phfs: -o project= is empty\n");
		free(out);
		return NULL;
	}
	return out;
}

/* A whole number or decimal, nothing after it. */
static int parse_number(const char *name, const char *arg, double min,
			double max, double *out)
{
	char *end;
	double v;

	if (!arg)
		return 0;
	v = strtod(arg, &end);
	if (end == arg || *end || !(v >= min) || !(v <= max)) {
		fprintf(stderr,
			"phfs: -o %s=%s: expected a number from %g to %g\n",
			name, arg, min, max);
		return -1;
	}
	*out = v;
	return 0;
}

static int parse_numbers(struct phfs_conf *c)
{
	double retries = c->retries;

	if (parse_number("ttl", c->ttl_arg, 0, 86400 * 365, &c->ttl) ||
	    parse_number("timeout", c->timeout_arg, 0.001, 86400,
			 &c->timeout) ||
	    parse_number("retries", c->retries_arg, 0, 100, &retries))
		return -1;
	if (retries != (int)retries) {
		fprintf(stderr, "phfs: -o retries=%s: expected a whole number\n",
			c->retries_arg);
		return -1;
	}
	c->retries = (int)retries;
	return 0;
}

/* $XDG_STATE_HOME/phfs/unsaved, or ~/.local/state/phfs/unsaved. */
static void keep_unsaved(struct tree *t)
{
	const char *state = getenv("XDG_STATE_HOME");
	const char *home = getenv("HOME");
	char dir[4096];

	if (state && state[0] == '/')
		snprintf(dir, sizeof(dir), "%s/phfs/unsaved", state);
	else if (home && home[0] == '/')
		snprintf(dir, sizeof(dir), "%s/.local/state/phfs/unsaved", home);
	else
		snprintf(dir, sizeof(dir), "/var/tmp/phfs-unsaved-%lu",
			 (unsigned long)getuid());
	tree_keep_unsaved(t, dir);
}

static void on_hup(int sig)
{
	(void)sig;
	ops_request_drop_caches();
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct phfs_conf conf = {.ttl = 10, .timeout = 30, .retries = 4};
	struct fuse_cmdline_opts fopts = {0};
	struct tree_opts topts = {0};
	struct api_opts aopts = {0};
	struct api_err err = {0};
	struct phfs ctx = {0};
	struct api *api = NULL;
	struct fuse *fuse = NULL;
	const char *host, *mnt;
	char *base = NULL, *key = NULL;
	char attr_opt[64];
	int rc = 1;

	if (fuse_opt_parse(&args, &conf, phfs_opts, opt_proc) == -1)
		goto out;
	if (conf.show_help) {
		usage(argv[0]);
		printf("FUSE options:\n");
		fuse_lib_help(&args);
		rc = 0;
		goto out;
	}
	if (conf.show_version) {
		version();
		rc = 0;
		goto out;
	}
	if (conf.key_given) {
		fprintf(stderr,
			"phfs: the key is never taken from the command line "
			"(it would show in ps and shell history); set "
			"$POSTHOG_PERSONAL_API_KEY or use -o key_file=PATH\n");
		goto out;
	}
	if (conf.nargs == 0) {
		fprintf(stderr, "phfs: missing MOUNTPOINT (see phfs -h)\n");
		goto out;
	}
	mnt = conf.args[conf.nargs - 1];
	host = conf.nargs == 2 ? conf.args[0] : getenv("POSTHOG_HOST");
	if (!host || !*host)
		host = DEFAULT_HOST;
	if (parse_numbers(&conf))
		goto out;
	base = base_url(host);
	if (!base)
		goto out;
	if (conf.key_file)
		key = read_key_file(conf.key_file);
	else if (getenv("POSTHOG_PERSONAL_API_KEY"))
		key = strdup(getenv("POSTHOG_PERSONAL_API_KEY"));
	else
		fprintf(stderr, "phfs: no API key: set "
				"$POSTHOG_PERSONAL_API_KEY or use -o "
				"key_file=PATH\n");
	if ((conf.key_file || getenv("POSTHOG_PERSONAL_API_KEY")) && key &&
	    !(key = clean_key(key)))
		fprintf(stderr, "phfs: the API key is empty or malformed\n");
	if (!key)
		goto out;
	if (conf.project) {
		topts.projects = split_projects(conf.project, &topts.nprojects);
		if (!topts.projects)
			goto out;
	}

	/* Our defaults come first so that the user's -o options win. */
	fuse_opt_insert_arg(&args, 1, "-osubtype=phfs");
	fuse_opt_insert_arg(&args, 1, "-ofsname=phfs");
	fuse_opt_add_arg(&args, mnt);
	if (fuse_parse_cmdline(&args, &fopts) != 0)
		goto out;
	/* The kernel keeps attributes a second at most, never past ttl; each
	 * change phfs sees is pushed to it at once. That push could wait on
	 * a read only the one thread of -s would answer: there it keeps
	 * none. */
	ctx.kernel_notify = !fopts.singlethread;
	snprintf(attr_opt, sizeof(attr_opt), "-oattr_timeout=%g",
		 ctx.kernel_notify ? (conf.ttl < 1 ? conf.ttl : 1) : 0);
	fuse_opt_insert_arg(&args, 1, attr_opt);

	log_init(fopts.debug);
	log_set_secret(key);
	if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
		fprintf(stderr, "phfs: cannot initialise libcurl\n");
		goto out;
	}
	aopts.base_url = base;
	aopts.key = key;
	aopts.cacert = conf.cacert;
	aopts.timeout = conf.timeout;
	aopts.retries = conf.retries;
	aopts.verbose = fopts.debug;
	api = api_new(&aopts);
	memset(key, 0, strlen(key));
	topts.ttl = conf.ttl;
	topts.ro = conf.ro;
	topts.uid = getuid();
	topts.gid = getgid();
	ctx.tree = api ? tree_new(api, &topts) : NULL;
	if (!ctx.tree) {
		fprintf(stderr, "phfs: out of memory\n");
		goto out;
	}

	/* fuse_new checks every other option: a typo is reported before
	 * any request. It starts no thread and mounts nothing. */
	fuse = fuse_new(&args, &ops_table, sizeof(ops_table), &ctx);
	if (!fuse)
		goto out;

	if (tree_premount(ctx.tree, &err)) {
		char reason[sizeof(err.msg)];

		snprintf(reason, sizeof(reason), "%s", err.msg);
		log_redact(reason);
		fprintf(stderr, "phfs: cannot mount %s: %s\n", base, reason);
		goto out;
	}

	if (fuse_mount(fuse, fopts.mountpoint) != 0)
		goto out;
	if (fuse_set_signal_handlers(fuse_get_session(fuse)) != 0)
		goto unmount;
	signal(SIGHUP, on_hup);
	/* No thread may cross the fork in fuse_daemonize. */
	api_suspend(api);
	if (fuse_daemonize(fopts.foreground) != 0)
		goto signals;
	if (!fopts.foreground)
		log_to_syslog();
	log_notice("mounted %s on %s", base, fopts.mountpoint);

	/* The loop returns the signal that ended it (SIGTERM, SIGINT): a
	 * clean unmount. Only an error is a failure. */
	if (fopts.singlethread)
		rc = fuse_loop(fuse) < 0 ? 1 : 0;
	else
		rc = fuse_loop_mt(fuse, fopts.clone_fd) < 0 ? 1 : 0;
	log_notice("unmounting %s", fopts.mountpoint);
	tree_stop(ctx.tree);
	keep_unsaved(ctx.tree);
signals:
	fuse_remove_signal_handlers(fuse_get_session(fuse));
unmount:
	fuse_unmount(fuse);
out:
	if (fuse)
		fuse_destroy(fuse);
	tree_free(ctx.tree);
	api_free(api);
	curl_global_cleanup();
	free(fopts.mountpoint);
	fuse_opt_free_args(&args);
	free(key);
	free(base);
	for (size_t i = 0; i < topts.nprojects; i++)
		free(topts.projects[i]);
	free(topts.projects);
	for (int i = 0; i < conf.nargs; i++)
		free(conf.args[i]);
	free(conf.key_file);
	free(conf.project);
	free(conf.ttl_arg);
	free(conf.timeout_arg);
	free(conf.retries_arg);
	free(conf.cacert);
	return rc;
}
