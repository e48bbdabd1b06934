/* diskshelf: the daemon's global settings.
 *
 * They come from the command line and from -o options alike, so the same
 * words work in fstab and in systemd units ("--cache-size=1G" and
 * "-o cache-size=1G" mean the same).  See options_parse.
 *
 * Ownership: options_parse fills a caller-provided struct whose strings it
 * owns; options_free releases them.
 */
#ifndef DISKSHELF_OPTIONS_H
#define DISKSHELF_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct daemon_options
{
  char *catalog;            /* absolute path of the catalog directory */
  char *mountpoint;         /* absolute path */
  bool foreground;          /* -f */
  bool debug;               /* -d / -o debug: verbose log, foreground */
  bool single_thread;       /* -s */
  bool readonly;            /* -o ro: every entry read-only */
  bool passthrough_off;     /* --passthrough=off: every read is a READ */
  char *fuse_options;       /* options passed through to FUSE (allow_other, ...) */

  char *cache_dir;          /* NULL when --cache-dir=none */
  bool cache_dir_set;       /* given explicitly (else the default) */
  uint64_t cache_size;      /* disk cache bound in bytes */
  uint64_t memory_cache_size;  /* decoded-block cache bound in bytes */
  uint64_t max_block_size;  /* largest xz block decoded in memory */
  unsigned workers;         /* decode worker threads; 0 = cores */
  uint64_t readahead;       /* kernel read-ahead on the mount, bytes */
  char *log_file;           /* --log-file: NULL for syslog/stderr */
  unsigned open_wait_ms;    /* --open-wait: how long a mount or reload
                               waits for new entries of unknown size */

  /* Defaults for entries without owner =, group =, mode =. */
  bool owner_set, group_set, mode_set;
  uid_t owner;
  gid_t group;
  mode_t mode;
  int overlay;              /* default for entries without `overlay =`:
                               an enum entry_overlay, never UNSET;
                               OVERLAY_FILE means one file per entry
                               in overlay_dir */
  char *overlay_dir;        /* for OVERLAY_FILE; absolute */

  /* --torrent-listen: where torrents seed from (each torrent takes the
   * first free port from torrent_listen_port up, 0 = any free port);
   * torrent_listen_off for --torrent-listen=off. */
  char *torrent_listen_address;
  uint16_t torrent_listen_port;
  bool torrent_listen_off;
};

/* Parse argv after the program name (and after a subcommand).  Returns
 * 0, 1 when --help or --version was handled (exit 0), or a negative
 * errno with a message recorded. */
int options_parse (int argc, char **argv, struct daemon_options *out);

void options_free (struct daemon_options *o);

/* The default cache directory: $XDG_CACHE_HOME/diskshelf (or
 * ~/.cache/diskshelf) for a user, /var/cache/diskshelf for root.
 * Returns a malloc'd string. */
char *options_default_cache_dir (void);

#endif
