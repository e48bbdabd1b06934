/* diskshelf: reading /proc/self/mountinfo (see mountinfo.h). */
#include "mountinfo.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
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

/* The last (topmost) mountinfo line whose mount point is path. */
bool
mountinfo_find (const char *path, char *fstype, size_t fstype_size,
                char *source, size_t source_size)
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

      if (dash == NULL
          || sscanf (line, "%*s %*s %*s %*s %4095s", target) != 1
          || sscanf (dash + 3, "%255s %4095s", type, src) != 2)
        continue;
      unescape (target);
      if (strcmp (target, path) != 0)
        continue;
      unescape (src);
      snprintf (fstype, fstype_size, "%s", type);
      snprintf (source, source_size, "%s", src);
      found = true;
    }
  fclose (fp);
  return found;
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
