/* diskshelf: owner, group and mode values (see ownership.h). */
#include "ownership.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"

/* A user name or number. */
int
parse_owner (const char *text, uid_t *out)
{
  struct passwd pw, *found = NULL;
  char buf[4096];
  uint64_t n;

  if (text_parse_uint (text, &n) == 0)
    {
      if (n >= (uid_t) -1)
        return -EINVAL;
      *out = (uid_t) n;
      return 0;
    }
  if (getpwnam_r (text, &pw, buf, sizeof buf, &found) != 0 || found == NULL)
    return -EINVAL;
  *out = found->pw_uid;
  return 0;
}

/* A group name or number. */
int
parse_group (const char *text, gid_t *out)
{
  struct group gr, *found = NULL;
  char buf[16384];
  uint64_t n;

  if (text_parse_uint (text, &n) == 0)
    {
      if (n >= (gid_t) -1)
        return -EINVAL;
      *out = (gid_t) n;
      return 0;
    }
  if (getgrnam_r (text, &gr, buf, sizeof buf, &found) != 0 || found == NULL)
    return -EINVAL;
  *out = found->gr_gid;
  return 0;
}

/* Octal permission bits. */
int
parse_mode (const char *text, mode_t *out)
{
  unsigned long v = 0;
  size_t len = strlen (text);

  if (len == 0 || len > 4)
    return -EINVAL;
  for (const char *p = text; *p; p++)
    {
      if (*p < '0' || *p > '7')
        return -EINVAL;
      v = v * 8 + (unsigned long) (*p - '0');
    }
  if (v > 0777)
    return -EINVAL;
  *out = (mode_t) v;
  return 0;
}
