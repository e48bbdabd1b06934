/* diskshelf: command-line and -o options of the daemon.
 *
 * Every long option also works as `-o name=value`, because fstab and
 * mount.fuse3 pass only -o, after the two positional arguments.  Options
 * diskshelf does not know are handed to FUSE (allow_other, ...); mount(8)
 * words that mean nothing to a FUSE file system are dropped. */
#include "options.h"

#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "entry.h"
#include "error.h"
#include "ownership.h"
#include "text.h"

#define DEFAULT_CACHE_SIZE (10ULL << 30)
#define DEFAULT_MEMORY_CACHE_SIZE (256ULL << 20)
#define DEFAULT_MAX_BLOCK_SIZE (256ULL << 20)
#define DEFAULT_READAHEAD (1ULL << 20)

/* mount(8) and systemd words that a FUSE mount must not see. */
static const char *const ignored_mount_options[] = {
  "defaults", "auto", "noauto", "nofail", "_netdev", "user", "users",
  "nouser", "rw", "exec", "noexec", "suid", "nosuid", "dev", "nodev",
  "atime", "noatime", "relatime",
};

static void
print_help (void)
{
  printf (
    "Usage: diskshelf [OPTIONS] CATALOG MOUNTPOINT\n"
    "       diskshelf check CATALOG\n"
    "       diskshelf status [--json] MOUNTPOINT [ENTRY...]\n"
    "       diskshelf prefetch [--background] FILE...\n"
    "\n"
    "Mount a catalog directory: every CATALOG/**/NAME.conf entry becomes\n"
    "MOUNTPOINT/**/NAME, a file that reads like a raw disk image, whatever\n"
    "is behind it (a local file, HTTP(S), xz, a tar member, NBD).\n"
    "\n"
    "Commands:\n"
    "  check CATALOG              validate every entry file, print each error\n"
    "  status MOUNTPOINT          every entry's stack, size, state, cache and\n"
    "                             errors; --json for scripts, ENTRY... to pick\n"
    "  prefetch FILE...           make whole images local (disk cache);\n"
    "                             --background only starts\n"
    "\n"
    "Options (each also works as -o NAME=VALUE):\n"
    "  -f, --foreground           stay in the foreground\n"
    "  -d, --debug                foreground with verbose logging\n"
    "  -s, --single-thread        serve FUSE requests on one thread\n"
    "  -o OPT[,OPT...]            diskshelf options and FUSE mount options\n"
    "                             (allow_other, ro, default_permissions, ...)\n"
    "  --cache-dir=DIR|none       persistent cache of remote bytes\n"
    "                             (default: $XDG_CACHE_HOME/diskshelf, or\n"
    "                             /var/cache/diskshelf for root)\n"
    "  --cache-size=SIZE          bound of the disk cache (default 10G)\n"
    "  --memory-cache-size=SIZE   one bound for the in-memory caches: a\n"
    "                             quarter for the remote engine's chunks\n"
    "                             (HTTP, torrents), the rest for xz blocks\n"
    "                             (default 256M)\n"
    "  --max-block-size=SIZE      largest xz block decoded in memory\n"
    "                             (default 256M)\n"
    "  --workers=N                decode threads (default: one per core)\n"
    "  --readahead=SIZE           kernel read-ahead on the mount (default 1M;\n"
    "                             0 keeps the kernel's 128K; needs root)\n"
    "  --passthrough=on|off       let the kernel read a read-only local file\n"
    "                             or a complete disk-cache copy itself (FUSE\n"
    "                             passthrough; default on where the kernel and\n"
    "                             CAP_SYS_ADMIN allow it)\n"
    "  --owner=USER, --group=GROUP, --mode=MODE\n"
    "                             owner, group and octal mode of entries that\n"
    "                             set none (default: the daemon's user and\n"
    "                             group, 0444, or 0644 when writable)\n"
    "  --torrent-listen=ADDR:PORT|off\n"
    "                             where torrents seed to other peers: each\n"
    "                             takes the first free port from PORT on\n"
    "                             (0: any); off: no seeding (default\n"
    "                             0.0.0.0:6881)\n"
    "  --log-file=FILE            append log lines to FILE\n"
    "  --open-wait=SECONDS        how long the mount or a reload waits for\n"
    "                             new entries whose size is not remembered\n"
    "                             before it answers (default 2; entries\n"
    "                             not open by then are listed as opening)\n"
    "  --overlay=none|discard|DIR where writes to entries without an\n"
    "                             `overlay =` key go: nowhere (default:\n"
    "                             read-only sources stay read-only), a\n"
    "                             private store dropped at the last close,\n"
    "                             or persistent files DIR/NAME.overlay\n"
    "  -h, --help                 show this help\n"
    "  -V, --version              show the version\n"
    "\n"
    "Sizes take K, M, G, T suffixes (powers of 1024).  A value may follow\n"
    "its option as the next argument (--cache-size 64M).\n"
    "\n"
    "Logs: with -f, to stderr (the journal under systemd).  In the\n"
    "background: to the journal when started by systemd, else to syslog,\n"
    "else (no /dev/log) to /var/log/diskshelf.log for root or\n"
    "$XDG_STATE_HOME/diskshelf/diskshelf.log for a user; --log-file wins.\n"
    "\n"
    "The catalog format is described in diskshelf-catalog(5), the daemon\n"
    "in diskshelf(1).\n");
}

/* Append one option to the comma-separated FUSE option string. */
static int
add_fuse_option (struct daemon_options *o, const char *opt)
{
  char *joined;

  if (o->fuse_options == NULL)
    joined = strdup (opt);
  else if (asprintf (&joined, "%s,%s", o->fuse_options, opt) < 0)
    joined = NULL;
  if (joined == NULL)
    return error_set (ENOMEM, "out of memory");
  free (o->fuse_options);
  o->fuse_options = joined;
  return 0;
}

/* Parse a size option value into *out, naming the option on error. */
static int
size_option (const char *name, const char *value, uint64_t *out)
{
  if (value == NULL || parse_size (value, out) < 0)
    return error_set (EINVAL,
                      "--%s: '%s' is not a size; give e.g. 512M or 10G",
                      name, value ? value : "");
  return 0;
}

/* The long options that take a value, so "--name VALUE" works too. */
static const char *const options_with_value[] = {
  "cache-dir", "cache-size", "memory-cache-size", "max-block-size",
  "readahead", "workers", "log-file", "open-wait", "owner", "group", "mode",
  "overlay", "torrent-listen", "passthrough",
};

/* True when --name needs a value. */
static bool
takes_value (const char *name)
{
  for (size_t i = 0; i < sizeof options_with_value
                         / sizeof options_with_value[0]; i++)
    if (strcmp (name, options_with_value[i]) == 0)
      return true;
  return false;
}

/* --overlay=none|discard|DIR: the default for entries without the key. */
static int
overlay_option (struct daemon_options *o, const char *value)
{
  if (value == NULL || *value == '\0')
    return error_set (EINVAL, "--overlay needs none, discard or a"
                      " directory");
  free (o->overlay_dir);
  o->overlay_dir = NULL;
  if (strcmp (value, "none") == 0)
    o->overlay = OVERLAY_NONE;
  else if (strcmp (value, "discard") == 0)
    o->overlay = OVERLAY_DISCARD;
  else
    {
      o->overlay_dir = realpath (value, NULL);
      if (o->overlay_dir == NULL)
        return error_set (EINVAL, "--overlay: '%s' is neither none, discard"
                          " nor an existing directory: %s", value,
                          strerror (errno));
      o->overlay = OVERLAY_FILE;
    }
  return 0;
}

/* --torrent-listen=ADDR:PORT|off ([v6]:PORT for IPv6 addresses). */
static int
torrent_listen_option (struct daemon_options *o, const char *value)
{
  const char *colon = value ? strrchr (value, ':') : NULL;
  uint64_t port;

  if (value != NULL && strcmp (value, "off") == 0)
    {
      o->torrent_listen_off = true;
      return 0;
    }
  if (colon == NULL || colon == value
      || text_parse_uint (colon + 1, &port) < 0 || port > 65535)
    return error_set (EINVAL, "--torrent-listen: '%s' is not ADDR:PORT;"
                      " give e.g. 0.0.0.0:6881, 127.0.0.1:0 or off",
                      value ? value : "");
  size_t n = (size_t) (colon - value);
  if (value[0] == '[' && n >= 2 && value[n - 1] == ']')
    value++, n -= 2;
  free (o->torrent_listen_address);
  o->torrent_listen_address = strndup (value, n);
  if (o->torrent_listen_address == NULL)
    return error_set (ENOMEM, "out of memory");
  o->torrent_listen_port = (uint16_t) port;
  o->torrent_listen_off = false;
  return 0;
}

/* Apply one named option ("cache-dir", "DIR"); value may be NULL.
 * Returns 1 when the name is not one of ours. */
static int
apply_option (struct daemon_options *o, const char *name, const char *value)
{
  uint64_t n;

  if (strcmp (name, "cache-dir") == 0)
    {
      if (value == NULL || *value == '\0')
        return error_set (EINVAL, "--cache-dir needs a directory or 'none'");
      free (o->cache_dir);
      o->cache_dir = strcmp (value, "none") == 0 ? NULL : strdup (value);
      o->cache_dir_set = true;
      return 0;
    }
  if (strcmp (name, "cache-size") == 0)
    return size_option (name, value, &o->cache_size);
  if (strcmp (name, "memory-cache-size") == 0)
    return size_option (name, value, &o->memory_cache_size);
  if (strcmp (name, "max-block-size") == 0)
    return size_option (name, value, &o->max_block_size);
  if (strcmp (name, "readahead") == 0)
    return size_option (name, value, &o->readahead);
  if (strcmp (name, "overlay") == 0)
    return overlay_option (o, value);
  if (strcmp (name, "torrent-listen") == 0)
    return torrent_listen_option (o, value);
  if (strcmp (name, "passthrough") == 0)
    {
      if (value != NULL && strcmp (value, "on") == 0)
        return o->passthrough_off = false, 0;
      if (value != NULL && strcmp (value, "off") == 0)
        return o->passthrough_off = true, 0;
      return error_set (EINVAL, "--passthrough: give on or off");
    }
  if (strcmp (name, "workers") == 0)
    {
      if (value == NULL || text_parse_uint (value, &n) < 0 || n > 256)
        return error_set (EINVAL, "--workers: give a number from 0 to 256");
      o->workers = (unsigned) n;
      return 0;
    }
  if (strcmp (name, "open-wait") == 0)
    {
      double seconds;
      char *end;

      errno = 0;
      seconds = value ? strtod (value, &end) : -1;
      if (value == NULL || errno || end == value || *end != '\0'
          || !(seconds >= 0 && seconds <= 3600))
        return error_set (EINVAL, "--open-wait: give seconds from 0 to 3600"
                          ", e.g. 2 or 0.5");
      o->open_wait_ms = (unsigned) (seconds * 1000 + 0.5);
      return 0;
    }
  if (strcmp (name, "log-file") == 0)
    {
      if (value == NULL || value[0] == '\0')
        return error_set (EINVAL, "--log-file needs a file name");
      free (o->log_file);
      o->log_file = strdup (value);
      return o->log_file ? 0 : error_set (ENOMEM, "out of memory");
    }
  if (strcmp (name, "owner") == 0)
    {
      if (value == NULL || parse_owner (value, &o->owner) < 0)
        return error_set (EINVAL, "--owner: '%s' is not a user on this"
                          " machine; give a user name or number",
                          value ? value : "");
      o->owner_set = true;
      return 0;
    }
  if (strcmp (name, "group") == 0)
    {
      if (value == NULL || parse_group (value, &o->group) < 0)
        return error_set (EINVAL, "--group: '%s' is not a group on this"
                          " machine; give a group name or number",
                          value ? value : "");
      o->group_set = true;
      return 0;
    }
  if (strcmp (name, "mode") == 0)
    {
      if (value == NULL || parse_mode (value, &o->mode) < 0)
        return error_set (EINVAL, "--mode: '%s' is not an octal mode; give"
                          " e.g. 0444 or 0640", value ? value : "");
      o->mode_set = true;
      return 0;
    }
  if (value == NULL)
    {
      if (strcmp (name, "foreground") == 0)
        return o->foreground = true, 0;
      if (strcmp (name, "debug") == 0)
        return o->debug = o->foreground = true, 0;
      if (strcmp (name, "single-thread") == 0)
        return o->single_thread = true, 0;
    }
  return 1;
}

/* Handle one -o list "a,b=c,d". */
static int
apply_o_list (struct daemon_options *o, const char *list)
{
  char *copy = strdup (list), *save = NULL;
  int r = 0;

  if (copy == NULL)
    return error_set (ENOMEM, "out of memory");
  for (char *opt = strtok_r (copy, ",", &save); opt && r >= 0;
       opt = strtok_r (NULL, ",", &save))
    {
      char *eq = strchr (opt, '=');
      bool ignored = false;

      if (eq)
        *eq = '\0';
      r = apply_option (o, opt, eq ? eq + 1 : NULL);
      if (eq)
        *eq = '=';
      if (r != 1)
        continue;
      r = 0;
      for (size_t i = 0; i < sizeof ignored_mount_options
                             / sizeof ignored_mount_options[0]; i++)
        if (strcmp (opt, ignored_mount_options[i]) == 0)
          ignored = true;
      if (strncmp (opt, "x-", 2) == 0 || strncmp (opt, "comment=", 8) == 0)
        ignored = true;
      if (strcmp (opt, "ro") == 0)
        o->readonly = true;
      if (!ignored)
        r = add_fuse_option (o, opt);
    }
  free (copy);
  return r;
}

/* Turn a path into an absolute one (the daemon changes directory). */
static int
absolute_path (const char *path, char **out)
{
  char *abs = realpath (path, NULL);

  if (abs == NULL)
    return error_set (errno, "%s: %s", path, strerror (errno));
  *out = abs;
  return 0;
}

/* Parse the daemon's arguments. */
int
options_parse (int argc, char **argv, struct daemon_options *o)
{
  const char *positional[2];
  int npositional = 0;
  int r;

  memset (o, 0, sizeof *o);
  o->cache_size = DEFAULT_CACHE_SIZE;
  o->memory_cache_size = DEFAULT_MEMORY_CACHE_SIZE;
  o->open_wait_ms = 2000;
  o->max_block_size = DEFAULT_MAX_BLOCK_SIZE;
  o->readahead = DEFAULT_READAHEAD;
  o->overlay = OVERLAY_NONE;
  o->torrent_listen_port = 6881;
  for (int i = 0; i < argc; i++)
    {
      const char *arg = argv[i];

      if (strcmp (arg, "-h") == 0 || strcmp (arg, "--help") == 0)
        {
          print_help ();
          return 1;
        }
      if (strcmp (arg, "-V") == 0 || strcmp (arg, "--version") == 0)
        {
          printf ("diskshelf %s\n", PACKAGE_VERSION);
          return 1;
        }
      if (strcmp (arg, "-f") == 0)
        r = apply_option (o, "foreground", NULL);
      else if (strcmp (arg, "-d") == 0)
        r = apply_option (o, "debug", NULL);
      else if (strcmp (arg, "-s") == 0)
        r = apply_option (o, "single-thread", NULL);
      else if (strcmp (arg, "-o") == 0)
        {
          if (++i == argc)
            return error_set (EINVAL, "-o needs an option list");
          r = apply_o_list (o, argv[i]);
        }
      else if (strncmp (arg, "-o", 2) == 0)
        r = apply_o_list (o, arg + 2);
      else if (strncmp (arg, "--", 2) == 0 && arg[2])
        {
          char *name = strdup (arg + 2), *eq;
          if (name == NULL)
            return error_set (ENOMEM, "out of memory");
          eq = strchr (name, '=');
          if (eq)
            *eq = '\0';
          if (eq == NULL && takes_value (name))
            {
              /* "--cache-size 64M": the value is the next argument. */
              if (i + 1 == argc)
                {
                  r = error_set (EINVAL, "--%s needs a value; see --help",
                                 name);
                  free (name);
                  return r;
                }
              r = apply_option (o, name, argv[++i]);
            }
          else
            r = apply_option (o, name, eq ? eq + 1 : NULL);
          free (name);
          if (r == 1)
            r = error_set (EINVAL, "unknown option '%s'; see --help", arg);
        }
      else if (arg[0] == '-' && arg[1])
        r = error_set (EINVAL, "unknown option '%s'; see --help", arg);
      else if (npositional < 2)
        {
          positional[npositional++] = arg;
          r = 0;
        }
      else
        r = error_set (EINVAL, "unexpected argument '%s'; see --help", arg);
      if (r < 0)
        return r;
    }
  if (npositional != 2)
    return error_set (EINVAL, "usage: diskshelf [OPTIONS] CATALOG MOUNTPOINT"
                      " (see --help)");
  r = absolute_path (positional[0], &o->catalog);
  if (r < 0)
    return error_prefix (r, "catalog directory");
  r = absolute_path (positional[1], &o->mountpoint);
  if (r == -ENOTCONN)
    return error_set (ENOTCONN, "mountpoint %s: a FUSE mount whose daemon"
                      " is gone is still there; remove it with"
                      " fusermount3 -uz %s", positional[1], positional[1]);
  if (r < 0)
    return error_prefix (r, "mountpoint");
  if (!o->cache_dir_set)
    o->cache_dir = options_default_cache_dir ();
  return 0;
}

/* Free the strings options_parse made. */
void
options_free (struct daemon_options *o)
{
  free (o->catalog);
  free (o->mountpoint);
  free (o->fuse_options);
  free (o->cache_dir);
  free (o->log_file);
  free (o->overlay_dir);
  free (o->torrent_listen_address);
  memset (o, 0, sizeof *o);
}

/* $XDG_CACHE_HOME/diskshelf, ~/.cache/diskshelf, or /var/cache/diskshelf. */
char *
options_default_cache_dir (void)
{
  const char *xdg = getenv ("XDG_CACHE_HOME");
  const char *home = getenv ("HOME");
  char *dir = NULL;

  if (geteuid () == 0)
    return strdup ("/var/cache/diskshelf");
  if (xdg && xdg[0] == '/')
    {
      if (asprintf (&dir, "%s/diskshelf", xdg) < 0)
        return NULL;
      return dir;
    }
  if (home == NULL || home[0] != '/')
    {
      struct passwd *pw = getpwuid (getuid ());
      home = pw ? pw->pw_dir : "/tmp";
    }
  if (asprintf (&dir, "%s/.cache/diskshelf", home) < 0)
    return NULL;
  return dir;
}
