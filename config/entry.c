/* diskshelf: parsing one catalog entry file (NAME.conf).
 *
 * The format is `key = value` lines, `#` comments and blank lines.  The
 * parser is table-driven (entry_keys below) and strict; it collects every
 * problem in the file so that `diskshelf check` can show them all. */
#include "entry.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "ownership.h"
#include "text.h"

enum key_kind
{
  KIND_STRING,        /* any non-empty text */
  KIND_SOURCE,        /* URI or absolute path that exists */
  KIND_FILE,          /* absolute path of a readable file */
  KIND_DIR,           /* absolute path of a directory */
  KIND_FLAG,          /* yes/no/true/false/1/0/on/off */
  KIND_SECONDS,       /* non-negative decimal */
  KIND_SIZE,          /* size with K/M/G/T */
  KIND_COUNT,         /* integer 1..1024 */
  KIND_COMPRESSION,   /* auto/none/xz */
  KIND_ARGV,          /* shell-like words */
  KIND_OWNER,         /* user name or uid */
  KIND_GROUP,         /* group name or gid */
  KIND_MODE,          /* octal permission bits */
  KIND_OVERLAY,       /* none/discard/absolute path */
};

struct entry_key
{
  const char *name;
  enum key_kind kind;
  size_t field;       /* offsetof in struct entry_config */
  const char *help;   /* what a good value looks like */
};

#define FIELD(f) offsetof (struct entry_config, f)

/* Every key an entry may use.  Keep in step with docs/diskshelf-catalog.5.md. */
static const struct entry_key entry_keys[] = {
  { "source", KIND_SOURCE, FIELD (source),
    "an absolute path, file:///path, http(s)://, nbd(s)://, nbd(s)+unix://"
    " or nbd+vsock:// URI" },
  { "command", KIND_ARGV, FIELD (command),
    "the command line of an NBD server that supports socket activation,"
    " e.g. qemu-nbd -f qcow2 /srv/vm.qcow2" },
  { "entry", KIND_STRING, FIELD (member), "the name of a tar member" },
  { "compression", KIND_COMPRESSION, FIELD (compression),
    "auto, none or xz" },
  { "readonly", KIND_FLAG, FIELD (readonly), "yes or no" },
  { "ca-file", KIND_FILE, FIELD (ca_file),
    "the absolute path of a PEM file of trusted CA certificates" },
  { "ca-path", KIND_DIR, FIELD (ca_path),
    "the absolute path of a directory of CA certificates" },
  { "tls-verify", KIND_FLAG, FIELD (tls_verify), "yes or no" },
  { "timeout", KIND_SECONDS, FIELD (timeout), "seconds, e.g. 30 or 2.5" },
  { "retry-time", KIND_SECONDS, FIELD (retry_time),
    "seconds, e.g. 60" },
  { "connections", KIND_COUNT, FIELD (connections),
    "a whole number from 1 to 1024" },
  { "user", KIND_STRING, FIELD (user), "a user name" },
  { "password-file", KIND_FILE, FIELD (password_file),
    "the absolute path of a file holding the password" },
  { "header-file", KIND_FILE, FIELD (header_file),
    "the absolute path of a file of `Name: value` header lines" },
  { "cookie-file", KIND_FILE, FIELD (cookie_file),
    "the absolute path of a cookie file" },
  { "user-agent", KIND_STRING, FIELD (user_agent), "a user agent string" },
  { "revalidate", KIND_SECONDS, FIELD (revalidate),
    "seconds between checks that a remote object did not change, e.g. 30" },
  { "send-credentials-on-redirect", KIND_FLAG,
    FIELD (send_credentials_on_redirect), "yes or no" },
  { "scan-limit", KIND_SIZE, FIELD (scan_limit),
    "a size such as 512M or 4G" },
  { "owner", KIND_OWNER, FIELD (owner),
    "a user name or number that exists on this machine" },
  { "group", KIND_GROUP, FIELD (group),
    "a group name or number that exists on this machine" },
  { "mode", KIND_MODE, FIELD (mode),
    "permission bits in octal, e.g. 0444 or 0640" },
  { "seed", KIND_FLAG, FIELD (seed),
    "yes or no (torrents: serve what this daemon has to other peers)" },
  { "upload-rate", KIND_SIZE, FIELD (upload_rate),
    "bytes per second uploaded at most, e.g. 1M (0: no limit)" },
  { "download", KIND_STRING, FIELD (download),
    "on-demand or full (torrents: fetch the whole torrent in the"
    " background)" },
  { "peers", KIND_STRING, FIELD (peers),
    "host:port peers separated by commas, e.g. 192.0.2.7:6881" },
  { "overlay", KIND_OVERLAY, FIELD (overlay),
    "none, discard, or the absolute path of an overlay file (its"
    " directory must exist)" },
};

/* Collected error text for one parse. */
struct problems
{
  char *text;
  size_t len;
  int count;
};

/* Append "FILE:LINE: message" to the problem list. */
static void __attribute__ ((format (printf, 4, 5)))
problem (struct problems *p, const char *file, unsigned line,
         const char *fmt, ...)
{
  char msg[1024];
  char *row;
  va_list ap;
  int n;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  if (line)
    n = asprintf (&row, "%s:%u: %s\n", file, line, msg);
  else
    n = asprintf (&row, "%s: %s\n", file, msg);
  p->count++;
  if (n < 0)
    return;
  char *grown = realloc (p->text, p->len + (size_t) n + 1);
  if (grown)
    {
      memcpy (grown + p->len, row, (size_t) n + 1);
      p->text = grown;
      p->len += (size_t) n;
    }
  free (row);
}

/* Parse a size such as 512, 4K, 1.5G (K/M/G/T are powers of 1024). */
int
parse_size (const char *text, uint64_t *out)
{
  char *end;
  double value, scale = 1;

  while (isspace ((unsigned char) *text))
    text++;
  if (!isdigit ((unsigned char) *text))
    return -EINVAL;
  errno = 0;
  value = strtod (text, &end);
  if (errno || end == text)
    return -EINVAL;
  switch (toupper ((unsigned char) *end))
    {
    case 'K': scale = 1024.0; end++; break;
    case 'M': scale = 1024.0 * 1024; end++; break;
    case 'G': scale = 1024.0 * 1024 * 1024; end++; break;
    case 'T': scale = 1024.0 * 1024 * 1024 * 1024; end++; break;
    case 'B': case '\0': break;
    default: return -EINVAL;
    }
  if (*end == 'i' && scale > 1)
    end++;
  if (toupper ((unsigned char) *end) == 'B')
    end++;
  if (*end != '\0')
    return -EINVAL;
  value *= scale;
  if (value >= 18446744073709551615.0 || value < 0)
    return -ERANGE;
  *out = (uint64_t) value;
  return 0;
}

/* Parse non-negative seconds ("30", "2.5"). */
int
parse_seconds (const char *text, double *out)
{
  char *end;
  double value;

  if (!isdigit ((unsigned char) *text))
    return -EINVAL;
  errno = 0;
  value = strtod (text, &end);
  if (errno || *end != '\0' || !isfinite (value) || value < 0)
    return -EINVAL;
  if (value > 86400.0 * 365)
    return -ERANGE;
  *out = value;
  return 0;
}

/* Parse yes/no words; returns 1, 0 or -EINVAL. */
static int
parse_flag (const char *text)
{
  static const char *const yes[] = { "yes", "true", "on", "1" };
  static const char *const no[] = { "no", "false", "off", "0" };

  for (size_t i = 0; i < 4; i++)
    {
      if (strcasecmp (text, yes[i]) == 0)
        return 1;
      if (strcasecmp (text, no[i]) == 0)
        return 0;
    }
  return -EINVAL;
}

/* True for sources that name a URI scheme we do not treat as a path. */
static bool
is_uri (const char *text)
{
  const char *p = text;

  if (!isalpha ((unsigned char) *p))
    return false;
  while (isalnum ((unsigned char) *p) || *p == '+' || *p == '-'
         || *p == '.')
    p++;
  return strncmp (p, "://", 3) == 0;
}

/* Check a source value; returns NULL when fine, or the complaint. */
static const char *
check_source (const char *value, char *buf, size_t size)
{
  static const char *const schemes[] = {
    "file://", "http://", "https://", "nbd://", "nbds://", "nbd+unix://",
    "nbds+unix://", "nbd+vsock://", "nbds+vsock://",
  };
  struct stat st;
  const char *path = value;

  if (strncasecmp (value, "magnet:?", 8) == 0)
    return NULL;
  if (is_uri (value))
    {
      bool known = false;
      for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
        if (strncasecmp (value, schemes[i], strlen (schemes[i])) == 0)
          known = true;
      if (!known)
        {
          snprintf (buf, size, "unsupported URI scheme in '%s'", value);
          return buf;
        }
      if (strncasecmp (value, "file://", 7) != 0)
        return NULL;
      path = value + 7;
    }
  if (path[0] != '/')
    {
      snprintf (buf, size, "'%s' is not an absolute path or a URI", value);
      return buf;
    }
  if (stat (path, &st) < 0)
    {
      snprintf (buf, size, "cannot use '%s': %s", path, strerror (errno));
      return buf;
    }
  if (S_ISDIR (st.st_mode))
    {
      snprintf (buf, size, "'%s' is a directory, not an image", path);
      return buf;
    }
  return NULL;
}

/* Check a path value of a KIND_FILE or KIND_DIR key. */
static const char *
check_path (const char *value, bool want_dir, char *buf, size_t size)
{
  struct stat st;

  if (value[0] != '/')
    snprintf (buf, size, "'%s' is not an absolute path", value);
  else if (stat (value, &st) < 0)
    snprintf (buf, size, "cannot use '%s': %s", value, strerror (errno));
  else if (want_dir && !S_ISDIR (st.st_mode))
    snprintf (buf, size, "'%s' is not a directory", value);
  else if (!want_dir && S_ISDIR (st.st_mode))
    snprintf (buf, size, "'%s' is a directory, not a file", value);
  else if (access (value, R_OK) < 0)
    snprintf (buf, size, "cannot read '%s': %s", value, strerror (errno));
  else
    return NULL;
  return buf;
}

/* Parse `overlay =`: none, discard, or a file in an existing directory. */
const char *
entry_parse_overlay (const char *value, enum entry_overlay *mode,
                     char **path, char *buf, size_t size)
{
  struct stat st;
  char *dir, *slash;

  *path = NULL;
  if (strcmp (value, "none") == 0)
    return *mode = OVERLAY_NONE, NULL;
  if (strcmp (value, "discard") == 0)
    return *mode = OVERLAY_DISCARD, NULL;
  if (value[0] != '/')
    {
      snprintf (buf, size, "'%s' is neither none, discard nor an absolute"
                " path", value);
      return buf;
    }
  if (stat (value, &st) == 0 && S_ISDIR (st.st_mode))
    {
      snprintf (buf, size, "'%s' is a directory, not an overlay file",
                value);
      return buf;
    }
  dir = strdup (value);
  if (dir == NULL)
    return "out of memory";
  slash = strrchr (dir, '/');
  slash[slash == dir ? 1 : 0] = '\0';
  if (stat (dir, &st) < 0 || !S_ISDIR (st.st_mode))
    {
      snprintf (buf, size, "the directory '%s' of the overlay file does not"
                " exist", dir);
      free (dir);
      return buf;
    }
  free (dir);
  *path = strdup (value);
  if (*path == NULL)
    return "out of memory";
  *mode = OVERLAY_FILE;
  return NULL;
}

/* Store one value into the entry; returns NULL or a complaint. */
static const char *
store_value (struct entry_config *e, const struct entry_key *key,
             const char *value, char *buf, size_t size)
{
  char *base = (char *) e;
  void *field = base + key->field;
  const char *complaint = NULL;
  uint64_t n;
  int r;

  switch (key->kind)
    {
    case KIND_SOURCE:
      complaint = check_source (value, buf, size);
      break;
    case KIND_FILE:
    case KIND_DIR:
      complaint = check_path (value, key->kind == KIND_DIR, buf, size);
      break;
    case KIND_STRING:
      break;
    case KIND_FLAG:
      r = parse_flag (value);
      if (r < 0)
        return "not a yes/no value";
      *(enum entry_flag *) field = r ? FLAG_YES : FLAG_NO;
      return NULL;
    case KIND_SECONDS:
      if (parse_seconds (value, (double *) field) < 0)
        return "not a number of seconds";
      return NULL;
    case KIND_SIZE:
      if (parse_size (value, (uint64_t *) field) < 0)
        return "not a size";
      return NULL;
    case KIND_COUNT:
      if (text_parse_uint (value, &n) < 0 || n < 1 || n > 1024)
        return "not a whole number from 1 to 1024";
      *(unsigned *) field = (unsigned) n;
      return NULL;
    case KIND_COMPRESSION:
      if (strcmp (value, "auto") == 0)
        e->compression = COMPRESSION_AUTO;
      else if (strcmp (value, "none") == 0)
        e->compression = COMPRESSION_NONE;
      else if (strcmp (value, "xz") == 0)
        e->compression = COMPRESSION_XZ;
      else
        return "unknown compression";
      return NULL;
    case KIND_OWNER:
      if (parse_owner (value, (uid_t *) field) < 0)
        return "no such user";
      e->owner_set = true;
      return NULL;
    case KIND_GROUP:
      if (parse_group (value, (gid_t *) field) < 0)
        return "no such group";
      e->group_set = true;
      return NULL;
    case KIND_MODE:
      if (parse_mode (value, (mode_t *) field) < 0)
        return "not an octal mode from 0000 to 0777";
      e->mode_set = true;
      return NULL;
    case KIND_OVERLAY:
      return entry_parse_overlay (value, &e->overlay, &e->overlay_path, buf,
                                  size);
    case KIND_ARGV:
      {
        char **argv;
        r = text_split_words (value, &argv);
        if (r == -EINVAL)
          return "unbalanced quotes";
        if (r < 0)
          return "cannot split into words";
        if (argv[0] == NULL)
          {
            free (argv);
            return "empty command";
          }
        *(char ***) field = argv;
        return NULL;
      }
    }
  if (complaint)
    return complaint;
  char *copy = strdup (value);
  if (copy == NULL)
    return "out of memory";
  *(char **) field = copy;
  return NULL;
}

/* The key in the table closest to an unknown name, for the hint. */
static const char *
closest_key (const char *name)
{
  const char *best = NULL;
  unsigned best_distance = UINT_MAX;

  for (size_t i = 0; i < sizeof entry_keys / sizeof entry_keys[0]; i++)
    {
      unsigned d = text_edit_distance (name, entry_keys[i].name);
      if (d < best_distance)
        {
          best_distance = d;
          best = entry_keys[i].name;
        }
    }
  return best_distance <= 3 ? best : NULL;
}

/* Parse one line "key = value" (already known to be non-blank). */
static void
parse_line (struct entry_config *e, char *line, const char *file,
            unsigned lineno, bool *seen, struct problems *p)
{
  char *eq = strchr (line, '=');
  char *key, *value;
  const struct entry_key *k = NULL;
  size_t index = 0;
  char buf[PATH_MAX + 256];

  if (eq == NULL)
    {
      problem (p, file, lineno,
               "expected 'key = value', got '%s'; fix: write e.g."
               " 'source = /srv/disk.img'", line);
      return;
    }
  *eq = '\0';
  key = text_trim (line);
  value = text_trim (eq + 1);
  for (size_t i = 0; i < sizeof entry_keys / sizeof entry_keys[0]; i++)
    if (strcmp (key, entry_keys[i].name) == 0)
      {
        k = &entry_keys[i];
        index = i;
        break;
      }
  if (k == NULL)
    {
      const char *hint = closest_key (key);
      if (hint)
        problem (p, file, lineno, "unknown key '%s'; fix: did you mean '%s'?",
                 key, hint);
      else
        problem (p, file, lineno,
                 "unknown key '%s'; fix: see diskshelf-catalog(5) for the"
                 " keys", key);
      return;
    }
  if (seen[index])
    {
      problem (p, file, lineno,
               "duplicate key '%s'; fix: keep only one '%s' line", key, key);
      return;
    }
  seen[index] = true;
  if (*value == '\0')
    {
      problem (p, file, lineno, "empty value for '%s'; fix: give %s", key,
               k->help);
      return;
    }
  const char *complaint = store_value (e, k, value, buf, sizeof buf);
  if (complaint)
    problem (p, file, lineno, "bad value for '%s': %s; fix: give %s", key,
             complaint, k->help);
}

/* Checks that need the whole file: a source or a command, not both. */
static void
check_entry (struct entry_config *e, const char *file, struct problems *p)
{
  if (e->source == NULL && e->command == NULL)
    problem (p, file, 0,
             "no source; fix: add a line 'source = /path/to/disk.img' (or a"
             " URI), or 'command = ...' for a captive NBD server");
  if (e->source && e->command)
    problem (p, file, 0,
             "both 'source' and 'command' are set; fix: keep one of them");
  if (e->download && strcmp (e->download, "full") != 0
      && strcmp (e->download, "on-demand") != 0)
    problem (p, file, 0,
             "download = %s: not a mode; fix: write 'download = full' or"
             " 'download = on-demand'", e->download);
  if (e->peers)
    for (const char *q = e->peers; *q;)
      {
        size_t n = strcspn (q, ",");
        const char *colon = memrchr (q, ':', n);
        if (colon == NULL || colon == q || colon + 1 == q + n
            || strspn (colon + 1, "0123456789") != (size_t) (q + n - colon - 1))
          {
            problem (p, file, 0,
                     "peers = %s: '%.*s' is not host:port; fix: write e.g."
                     " 'peers = 192.0.2.7:6881,[2001:db8::1]:6881'",
                     e->peers, (int) n, q);
            break;
          }
        q += n + (q[n] == ',');
      }
}

/* Read and parse one .conf file. */
int
entry_parse (const char *conf_path, const char *name,
             struct entry_config **out, char **errors)
{
  bool seen[sizeof entry_keys / sizeof entry_keys[0]] = { false };
  struct problems p = { NULL, 0, 0 };
  struct entry_config *e;
  char *line = NULL;
  size_t cap = 0;
  unsigned lineno = 0;
  FILE *fp;

  *out = NULL;
  *errors = NULL;
  e = calloc (1, sizeof *e);
  if (e == NULL)
    return error_set (ENOMEM, "%s: out of memory", conf_path);
  e->readonly = FLAG_UNSET;
  e->tls_verify = FLAG_UNSET;
  e->send_credentials_on_redirect = FLAG_UNSET;
  e->seed = FLAG_UNSET;
  e->revalidate = -1;
  e->conf_path = strdup (conf_path);
  e->name = strdup (name);
  fp = fopen (conf_path, "re");
  if (fp == NULL)
    {
      int saved = errno;
      problem (&p, conf_path, 0, "cannot read: %s", strerror (saved));
      entry_free (e);
      *errors = p.text;
      return error_set (saved, "%s: cannot read: %s", conf_path,
                        strerror (saved));
    }
  for (ssize_t n; (n = getline (&line, &cap, fp)) != -1;)
    {
      char *text;

      lineno++;
      if (strlen (line) != (size_t) n)
        {
          problem (&p, conf_path, lineno,
                   "contains a NUL byte; fix: this is not a text file");
          continue;
        }
      text = text_trim (line);
      if (*text == '\0' || *text == '#')
        continue;
      parse_line (e, text, conf_path, lineno, seen, &p);
    }
  free (line);
  fclose (fp);
  check_entry (e, conf_path, &p);
  if (p.count > 0)
    {
      entry_free (e);
      *errors = p.text;
      return error_set (EINVAL, "%s: %d error%s", conf_path, p.count,
                        p.count == 1 ? "" : "s");
    }
  *out = e;
  return 0;
}

/* Free an entry and every string it owns. */
void
entry_free (struct entry_config *e)
{
  if (e == NULL)
    return;
  free (e->conf_path);
  free (e->name);
  free (e->source);
  if (e->command)
    for (char **w = e->command; *w; w++)
      free (*w);
  free (e->command);
  free (e->member);
  free (e->ca_file);
  free (e->ca_path);
  free (e->user);
  free (e->password_file);
  free (e->header_file);
  free (e->cookie_file);
  free (e->user_agent);
  free (e->overlay_path);
  free (e->download);
  free (e->peers);
  free (e);
}
