/* diskshelf: reading /proc/self/mountinfo (see mountinfo.h). */
#include "mountinfo.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>

#include "error.h"

/* Undo mountinfo's octal escapes ("\040" for a space) in place. */
static void
unescape (char *s)
{
  char *out = s;

  for (; *s; s++)
    {
      if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0'
          && s[2] <= '7' && s[3] >= '0' && s[3] <= '7')
        {
          *out++ = (char) ((s[1] - '0') * 64 + (s[2] - '0') * 8
                           + (s[3] - '0'));
          s += 3;
        }
      else
        *out++ = *s;
    }
  *out = '\0';
}

/* The last (topmost) mountinfo line whose mount point is path: its
 * type, source and device (any pointer but path may be NULL). */
static bool
find_top (const char *path, char *fstype, size_t fstype_size,
          char *source, size_t source_size, dev_t *dev)
{
  char line[8192];
  bool found = false;
  FILE *fp = fopen ("/proc/self/mountinfo", "re");

  if (fp == NULL)
    return false;
  while (fgets (line, sizeof line, fp))
    {
      char target[4096], type[256], src[4096];
      const char *dash = strstr (line, " - ");
      unsigned maj, min;

      if (dash == NULL
          || sscanf (line, "%*s %*s %u:%u %*s %4095s", &maj, &min,
                     target) != 3
          || sscanf (dash + 3, "%255s %4095s", type, src) != 2)
        continue;
      unescape (target);
      if (strcmp (target, path) != 0)
        continue;
      unescape (src);
      if (fstype)
        snprintf (fstype, fstype_size, "%s", type);
      if (source)
        snprintf (source, source_size, "%s", src);
      if (dev)
        *dev = makedev (maj, min);
      found = true;
    }
  fclose (fp);
  return found;
}

bool
mountinfo_find (const char *path, char *fstype, size_t fstype_size,
                char *source, size_t source_size)
{
  return find_top (path, fstype, fstype_size, source, source_size, NULL);
}

bool
mountinfo_device (const char *path, const char *fstype, dev_t *dev)
{
  char type[256];

  return find_top (path, type, sizeof type, NULL, 0, dev)
         && strcmp (type, fstype) == 0;
}

/* EBUSY when a diskshelf mount is on path already. */
int
mount_check_not_mounted (const char *path)
{
  char type[256], source[4096];
  struct statfs sf;

  if (!mountinfo_find (path, type, sizeof type, source, sizeof source))
    return 0;
  if (strcmp (type, "fuse.diskshelf") != 0)
    return 0;
  /* statfs always asks the daemon (stat may answer from cached
   * attributes): ENOTCONN means its daemon died and left the mount. */
  if (statfs (path, &sf) < 0 && errno == ENOTCONN)
    return error_set (ENOTCONN, "mountpoint %s: a FUSE mount whose daemon"
                      " is gone is still there; remove it with"
                      " fusermount3 -uz %s", path, path);
  return error_set (EBUSY, "mountpoint %s: diskshelf already serves %s"
                    " there; unmount it first (fusermount3 -u %s) or"
                    " choose another mountpoint", path, source, path);
}
