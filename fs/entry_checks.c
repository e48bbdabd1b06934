/* diskshelf: checks made before an entry's stack opens, and the row that
 * names a broken entry. */
#include "entry_checks.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "captive.h"
#include "error.h"
#include "nbd.h"

/* Is the source an http(s) URL? */
static bool
is_http (const char *source)
{
  return strncasecmp (source, "http://", 7) == 0
         || strncasecmp (source, "https://", 8) == 0;
}

/* The NBD URI parses, and TLS keys come with a TLS scheme. */
static int
check_nbd_source (const struct entry_config *e)
{
  struct nbd_uri *u;
  bool tls;
  int r;

  r = nbd_uri_parse (e->source, &u);
  if (r < 0)
    return error_set (-r, "nbd: %s: %s", e->source, nbd_get_error ());
  tls = u->tls;
  nbd_uri_free (u);
  if (!tls && (e->ca_file || e->ca_path || e->tls_verify != FLAG_UNSET))
    return error_set (EINVAL, "nbd: %s: ca-file, ca-path and tls-verify "
                      "apply only to TLS; fix: use an nbds:// (or "
                      "nbds+unix://) source, or remove those keys",
                      e->source);
  return 0;
}

/* Everything that can be known about an entry without opening it. */
int
entry_static_check (const struct entry_config *e)
{
  if (e->command)
    return captive_command_check (e->command);
  if (e->source == NULL)
    return error_set (EINVAL, "no source");
  if (nbd_uri_is_nbd (e->source))
    return check_nbd_source (e);
  if (!is_http (e->source) && e->tls_verify != FLAG_UNSET)
    return error_set (EINVAL, "%s: tls-verify applies only to https:// and "
                      "nbds:// sources; fix: remove it", e->source);
  return 0;
}

/* The line of the first source or command key in text, or 0. */
static unsigned
source_line (const char *text)
{
  unsigned line = 1;

  for (const char *p = text; p && *p; line++)
    {
      const char *start = p + strspn (p, " \t");
      if ((strncmp (start, "source", 6) == 0
           && strchr (" \t=", start[6]) && start[6])
          || (strncmp (start, "command", 7) == 0
              && strchr (" \t=", start[7]) && start[7]))
        return line;
      p = strchr (p, '\n');
      if (p)
        p++;
    }
  return 0;
}

/* Read a whole small file, or NULL. */
static char *
slurp (const char *path)
{
  FILE *fp = fopen (path, "re");
  char *text = NULL;
  size_t cap = 0;
  ssize_t n;

  if (fp == NULL)
    return NULL;
  n = getdelim (&text, &cap, '\0', fp);
  fclose (fp);
  if (n < 0)
    {
      free (text);
      return NULL;
    }
  return text;
}

/* "FILE:LINE: message\n" for a broken entry. */
char *
entry_problem_row (const struct entry_config *e, const char *conf_text,
                   const char *message)
{
  char *owned = conf_text ? NULL : slurp (e->conf_path);
  unsigned line = source_line (conf_text ? conf_text : owned);
  char *row = NULL;
  int n;

  free (owned);
  if (line)
    n = asprintf (&row, "%s:%u: %s\n", e->conf_path, line, message);
  else
    n = asprintf (&row, "%s: %s\n", e->conf_path, message);
  return n < 0 ? NULL : row;
}
