/* diskshelf: one catalog entry, as parsed from CATALOG/NAME.conf.
 *
 * The parser (config/entry.c) is strict: unknown keys, bad values,
 * duplicate keys and a missing source are errors naming the file, the
 * line and the fix.  Every key is documented in docs/diskshelf-catalog.5.md.
 *
 * Ownership: entry_parse returns a struct the caller frees with
 * entry_free; every string in it is owned by the struct.
 */
#ifndef DISKSHELF_ENTRY_H
#define DISKSHELF_ENTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum entry_compression { COMPRESSION_AUTO, COMPRESSION_NONE, COMPRESSION_XZ };

/* `overlay =`: where writes go.  UNSET takes the daemon's --overlay. */
enum entry_overlay { OVERLAY_UNSET, OVERLAY_NONE, OVERLAY_DISCARD,
                     OVERLAY_FILE };

/* A tri-state for yes/no keys that may be left unset. */
enum entry_flag { FLAG_UNSET = -1, FLAG_NO = 0, FLAG_YES = 1 };

struct entry_config
{
  char *conf_path;        /* the .conf file, absolute */
  char *name;             /* path in the mount, "a/b.img" */

  char *source;           /* URI or absolute path; NULL when command set */
  char **command;         /* argv of a captive NBD server, NULL-ended */
  char *member;           /* `entry =`: tar member name */
  enum entry_compression compression;
  enum entry_flag readonly;

  /* TLS */
  char *ca_file;
  char *ca_path;
  enum entry_flag tls_verify;   /* default yes */

  /* Remote behaviour */
  double timeout;         /* seconds per request; 0 = layer default */
  double retry_time;      /* seconds of retrying before EIO; 0 = default */
  unsigned connections;   /* NBD multi-conn / HTTP pool; 0 = default */
  double revalidate;      /* seconds between checks at open; <0 = default */

  /* HTTP credentials and headers, all read from files */
  char *user;
  char *password_file;
  char *header_file;
  char *cookie_file;
  char *user_agent;
  enum entry_flag send_credentials_on_redirect; /* default no */

  /* tar */
  uint64_t scan_limit;    /* max bytes of archive to scan; 0 = default */

  /* torrents */
  enum entry_flag seed;   /* serve pieces to peers; default yes */
  uint64_t upload_rate;   /* bytes/s uploaded at most; 0 = no limit */
  char *download;         /* NULL / "on-demand", or "full" */
  char *peers;            /* "host:port,..." extra peers, or NULL */

  /* Ownership of the served file; the daemon's --owner, --group and
   * --mode (or the daemon's own user and group, 0444/0644) when unset. */
  bool owner_set, group_set, mode_set;
  uid_t owner;
  gid_t group;
  mode_t mode;            /* permission bits only */
  /* copy-on-write overlay */
  enum entry_overlay overlay;
  char *overlay_path;     /* for OVERLAY_FILE: absolute path */
};

/* Parse an overlay value: "none", "discard" or an absolute path (whose
 * directory must exist).  Returns NULL when fine (*path malloc'd for a
 * path), or a complaint written into buf. */
const char *entry_parse_overlay (const char *value, enum entry_overlay *mode,
                                 char **path, char *buf, size_t size);

/* Parse one .conf file.  name is the entry's path in the mount.  On
 * error returns a negative errno; every problem found is appended to
 * *errors (one "FILE:LINE: message" per line, malloc'd, caller frees)
 * so that `diskshelf check` can print all of them. */
int entry_parse (const char *conf_path, const char *name,
                 struct entry_config **out, char **errors);

void entry_free (struct entry_config *e);

/* Parse a size with an optional K/M/G/T suffix (powers of 1024).
 * Returns 0 or -EINVAL / -ERANGE. */
int parse_size (const char *text, uint64_t *out);

/* Parse seconds as a non-negative decimal ("30", "2.5"). */
int parse_seconds (const char *text, double *out);

#endif
