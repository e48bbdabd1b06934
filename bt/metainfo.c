/* diskshelf bt: metainfo (.torrent) parsing and checking.
 *
 * BEP 3 single and multi-file, BEP 12 announce-list, BEP 19 url-list,
 * BEP 47 padding files.  A hybrid v1/v2 torrent (BEP 52 "meta version" 2
 * beside "pieces") is read through its v1 part; a pure v2 torrent is
 * refused.  Paths are sanitised so that no name can climb out of, or
 * escape, the torrent's own directory.
 */
#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bencode.h"
#include "bt.h"
#include "error.h"

#define MAX_PIECE_LENGTH (128u << 20)
#define MAX_FILES 1000000
#define MAX_METAINFO_SIZE (64u << 20)

/* Copy a string node into a new C string (NULL on ENOMEM). */
static char *
node_strdup (const struct bt_bnode *n)
{
  char *s = malloc (n->str_len + 1);
  if (s != NULL)
    {
      memcpy (s, n->str, n->str_len);
      s[n->str_len] = '\0';
    }
  return s;
}

/* Check one path component: not empty, not "." or "..", no '/' or NUL. */
static int
check_component (const struct bt_bnode *n, const char *what)
{
  if (n == NULL || n->type != BT_BSTR)
    return error_set (EINVAL, "%s is not a string", what);
  if (n->str_len == 0)
    return error_set (EINVAL, "%s has an empty path component", what);
  if ((n->str_len == 1 && n->str[0] == '.')
      || (n->str_len == 2 && n->str[0] == '.' && n->str[1] == '.'))
    return error_set (EINVAL, "%s has a \"%.*s\" path component; refusing a "
                      "path that leaves the torrent's directory", what,
                      (int) n->str_len, (const char *) n->str);
  for (size_t i = 0; i < n->str_len; i++)
    if (n->str[i] == '/' || n->str[i] == '\0' || n->str[i] == '\\')
      return error_set (EINVAL, "%s has a path component containing '/', "
                        "'\\' or NUL", what);
  return 0;
}

/* Join a path list (already checked) with '/'. */
static char *
join_path (const struct bt_bnode *list)
{
  size_t len = 0;
  for (const struct bt_bnode *c = list->first; c != NULL; c = c->next)
    len += c->str_len + 1;
  char *s = malloc (len + 1), *p = s;
  if (s == NULL)
    return NULL;
  for (const struct bt_bnode *c = list->first; c != NULL; c = c->next)
    {
      if (p != s)
        *p++ = '/';
      memcpy (p, c->str, c->str_len);
      p += c->str_len;
    }
  *p = '\0';
  return s;
}

/* Parse info.files (multi-file mode). */
static int
parse_files (struct bt_metainfo *mi, const struct bt_bnode *files)
{
  if (files->count == 0)
    return error_set (EINVAL, "info.files is empty");
  if (files->count > MAX_FILES)
    return error_set (EINVAL, "info.files has more than %d files", MAX_FILES);
  mi->files = calloc (files->count, sizeof *mi->files);
  if (mi->files == NULL)
    return error_set (ENOMEM, "out of memory");
  uint64_t offset = 0;
  for (const struct bt_bnode *f = files->first; f != NULL; f = f->next)
    {
      size_t i = mi->file_count;
      if (f->type != BT_BDICT)
        return error_set (EINVAL, "info.files[%zu] is not a dictionary", i);
      const struct bt_bnode *len = bt_bdict_get_type (f, "length", BT_BINT);
      const struct bt_bnode *path = bt_bdict_get_type (f, "path", BT_BLIST);
      if (len == NULL || len->ival < 0)
        return error_set (EINVAL, "info.files[%zu]: no valid length", i);
      if (path == NULL || path->count == 0)
        return error_set (EINVAL, "info.files[%zu]: no valid path", i);
      for (const struct bt_bnode *c = path->first; c != NULL; c = c->next)
        {
          char what[64];
          snprintf (what, sizeof what, "info.files[%zu].path", i);
          int r = check_component (c, what);
          if (r < 0)
            return r;
        }
      const struct bt_bnode *attr = bt_bdict_get_type (f, "attr", BT_BSTR);
      mi->files[i].pad = attr != NULL
                         && memchr (attr->str, 'p', attr->str_len) != NULL;
      mi->files[i].path = join_path (path);
      if (mi->files[i].path == NULL)
        return error_set (ENOMEM, "out of memory");
      mi->files[i].length = len->ival;
      mi->files[i].offset = offset;
      mi->file_count++;
      if ((uint64_t) len->ival > UINT64_MAX / 2 - offset)
        return error_set (EINVAL, "info.files: total length overflows");
      offset += len->ival;
      for (size_t j = 0; j < i; j++)
        if (strcmp (mi->files[j].path, mi->files[i].path) == 0)
          return error_set (EINVAL, "info.files: \"%s\" appears twice",
                            mi->files[i].path);
    }
  mi->total_length = offset;
  return 0;
}

/* Parse one URL string into a new C string; NULL sets an error. */
static int
url_dup (const struct bt_bnode *n, char **out, const char *what)
{
  if (n == NULL || n->type != BT_BSTR || n->str_len == 0
      || memchr (n->str, '\0', n->str_len) != NULL)
    return error_set (EINVAL, "%s is not a URL string", what);
  *out = node_strdup (n);
  return *out == NULL ? error_set (ENOMEM, "out of memory") : 0;
}

/* Parse announce-list (BEP 12) or announce into tiers. */
static int
parse_trackers (struct bt_metainfo *mi, const struct bt_bnode *root)
{
  const struct bt_bnode *list = bt_bdict_get_type (root, "announce-list",
                                                   BT_BLIST);
  if (list != NULL && list->count > 0)
    {
      if (list->count > 1000)
        return error_set (EINVAL, "announce-list has too many tiers");
      mi->tiers = calloc (list->count, sizeof *mi->tiers);
      if (mi->tiers == NULL)
        return error_set (ENOMEM, "out of memory");
      for (const struct bt_bnode *t = list->first; t != NULL; t = t->next)
        {
          if (t->type != BT_BLIST || t->count > 1000)
            return error_set (EINVAL, "announce-list tier %zu is not a list",
                              mi->tier_count);
          char **urls = calloc (t->count + 1, sizeof *urls);
          if (urls == NULL)
            return error_set (ENOMEM, "out of memory");
          mi->tiers[mi->tier_count++] = urls;
          size_t k = 0;
          for (const struct bt_bnode *u = t->first; u != NULL; u = u->next)
            {
              int r = url_dup (u, &urls[k], "announce-list entry");
              if (r < 0)
                return r;
              k++;
            }
        }
      return 0;
    }
  const struct bt_bnode *ann = bt_bdict_get (root, "announce");
  if (ann == NULL)
    return 0;                   /* trackerless: extra peers or web seeds */
  mi->tiers = calloc (1, sizeof *mi->tiers);
  if (mi->tiers == NULL)
    return error_set (ENOMEM, "out of memory");
  mi->tiers[0] = calloc (2, sizeof (char *));
  if (mi->tiers[0] == NULL)
    return error_set (ENOMEM, "out of memory");
  mi->tier_count = 1;
  return url_dup (ann, &mi->tiers[0][0], "announce");
}

/* Parse url-list (BEP 19): a string or a list of strings. */
static int
parse_url_list (struct bt_metainfo *mi, const struct bt_bnode *root)
{
  const struct bt_bnode *ul = bt_bdict_get (root, "url-list");
  if (ul == NULL || (ul->type == BT_BSTR && ul->str_len == 0))
    return 0;
  if (ul->type == BT_BSTR)
    {
      mi->url_list = calloc (1, sizeof (char *));
      if (mi->url_list == NULL)
        return error_set (ENOMEM, "out of memory");
      mi->url_count = 1;
      return url_dup (ul, &mi->url_list[0], "url-list");
    }
  if (ul->type != BT_BLIST || ul->count > 1000)
    return error_set (EINVAL, "url-list is neither a URL nor a list of URLs");
  mi->url_list = calloc (ul->count + 1, sizeof (char *));
  if (mi->url_list == NULL)
    return error_set (ENOMEM, "out of memory");
  for (const struct bt_bnode *u = ul->first; u != NULL; u = u->next)
    {
      int r = url_dup (u, &mi->url_list[mi->url_count], "url-list entry");
      if (r < 0)
        return r;
      mi->url_count++;
    }
  return 0;
}

/* Parse and check the info dictionary. */
static int
parse_info (struct bt_metainfo *mi, const struct bt_bnode *info)
{
  if (!bt_bnode_all_sorted (info))
    return error_set (EINVAL, "info dictionary has unsorted keys, so its "
                      "info-hash is ambiguous; re-create the torrent");
  const struct bt_bnode *mv = bt_bdict_get_type (info, "meta version",
                                                 BT_BINT);
  const struct bt_bnode *pieces = bt_bdict_get_type (info, "pieces", BT_BSTR);
  if (mv != NULL && mv->ival == 2)
    {
      if (pieces == NULL)
        return error_set (EINVAL, "a BitTorrent v2-only torrent (BEP 52) is "
                          "not supported; use a v1 or hybrid torrent "
                          "(mktorrent makes v1)");
      mi->hybrid = true;
    }
  else if (mv != NULL)
    return error_set (EINVAL, "unknown meta version %lld",
                      (long long) mv->ival);
  if (pieces == NULL)
    return error_set (EINVAL, "info.pieces is missing");
  const struct bt_bnode *name = bt_bdict_get_type (info, "name", BT_BSTR);
  int r = check_component (name, "info.name");
  if (r < 0)
    return r;
  mi->name = node_strdup (name);
  if (mi->name == NULL)
    return error_set (ENOMEM, "out of memory");
  const struct bt_bnode *pl = bt_bdict_get_type (info, "piece length",
                                                 BT_BINT);
  if (pl == NULL || pl->ival <= 0 || pl->ival > MAX_PIECE_LENGTH)
    return error_set (EINVAL, "info.piece length is missing or not between 1 "
                      "and %u", MAX_PIECE_LENGTH);
  mi->piece_length = pl->ival;
  const struct bt_bnode *priv = bt_bdict_get_type (info, "private", BT_BINT);
  mi->private_ = priv != NULL && priv->ival == 1;

  const struct bt_bnode *len = bt_bdict_get (info, "length");
  const struct bt_bnode *files = bt_bdict_get (info, "files");
  if ((len == NULL) == (files == NULL))
    return error_set (EINVAL, "info must have exactly one of length "
                      "(single file) and files (multi-file)");
  if (len != NULL)
    {
      if (len->type != BT_BINT || len->ival < 0)
        return error_set (EINVAL, "info.length is not a valid length");
      mi->files = calloc (1, sizeof *mi->files);
      if (mi->files == NULL || (mi->files[0].path = strdup (mi->name)) == NULL)
        return error_set (ENOMEM, "out of memory");
      mi->file_count = 1;
      mi->files[0].length = len->ival;
      mi->total_length = len->ival;
    }
  else
    {
      if (files->type != BT_BLIST)
        return error_set (EINVAL, "info.files is not a list");
      mi->multi_file = true;
      r = parse_files (mi, files);
      if (r < 0)
        return r;
    }
  if (mi->total_length == 0)
    return error_set (EINVAL, "the torrent's content is empty");

  uint64_t count = (mi->total_length + mi->piece_length - 1)
                   / mi->piece_length;
  if (pieces->str_len % 20 != 0)
    return error_set (EINVAL, "info.pieces is %zu bytes, not a multiple of "
                      "20", pieces->str_len);
  if (pieces->str_len / 20 != count)
    return error_set (EINVAL, "info.pieces holds %zu hashes but %llu bytes "
                      "in pieces of %u need %llu", pieces->str_len / 20,
                      (unsigned long long) mi->total_length,
                      mi->piece_length, (unsigned long long) count);
  if (count > UINT32_MAX - 1)
    return error_set (EINVAL, "too many pieces");
  mi->piece_count = count;
  mi->pieces = malloc (pieces->str_len);
  if (mi->pieces == NULL)
    return error_set (ENOMEM, "out of memory");
  memcpy (mi->pieces, pieces->str, pieces->str_len);
  return 0;
}

/* Parse a metainfo buffer (see bt.h). */
int
bt_metainfo_parse (const uint8_t *data, size_t len, struct bt_metainfo **out)
{
  struct bt_bdoc *doc;
  struct bt_bnode *root;
  int r = bt_bencode_parse (data, len, &doc, &root);
  if (r < 0)
    return error_prefix (-r, "not a valid torrent file");
  struct bt_metainfo *mi = calloc (1, sizeof *mi);
  if (mi == NULL)
    {
      bt_bdoc_free (doc);
      return error_set (ENOMEM, "out of memory");
    }
  const struct bt_bnode *info = bt_bdict_get_type (root, "info", BT_BDICT);
  if (root->type != BT_BDICT)
    r = error_set (EINVAL, "not a torrent file: the top level is not a "
                   "dictionary");
  else if (info == NULL)
    r = error_set (EINVAL, "not a torrent file: no info dictionary");
  else
    {
      r = parse_info (mi, info);
      if (r == 0)
        r = parse_trackers (mi, root);
      if (r == 0)
        r = parse_url_list (mi, root);
      if (r == 0
          && gnutls_hash_fast (GNUTLS_DIG_SHA1, info->raw, info->raw_len,
                               mi->info_hash) < 0)
        r = error_set (EIO, "SHA-1 of the info dictionary failed");
    }
  bt_bdoc_free (doc);
  if (r < 0)
    {
      bt_metainfo_free (mi);
      return r;
    }
  *out = mi;
  return 0;
}

/* Read a whole file and parse it. */
int
bt_metainfo_load (const char *path, struct bt_metainfo **out)
{
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return error_set (errno, "%s: %s", path, strerror (errno));
  struct stat st;
  if (fstat (fd, &st) < 0 || !S_ISREG (st.st_mode)
      || st.st_size > MAX_METAINFO_SIZE)
    {
      close (fd);
      return error_set (EINVAL, "%s: not a regular file of at most %u MiB",
                        path, MAX_METAINFO_SIZE >> 20);
    }
  uint8_t *buf = malloc (st.st_size + 1);
  if (buf == NULL)
    {
      close (fd);
      return error_set (ENOMEM, "%s: out of memory", path);
    }
  size_t got = 0;
  while (got < (size_t) st.st_size)
    {
      ssize_t n = read (fd, buf + got, st.st_size - got);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        {
          int e = n < 0 ? errno : EIO;
          close (fd);
          free (buf);
          return error_set (e, "%s: read: %s", path, strerror (e));
        }
      got += n;
    }
  close (fd);
  int r = bt_metainfo_parse (buf, got, out);
  free (buf);
  if (r < 0)
    return error_prefix (-r, "%s", path);
  return 0;
}

/* Free everything a metainfo owns. */
void
bt_metainfo_free (struct bt_metainfo *mi)
{
  if (mi == NULL)
    return;
  free (mi->name);
  free (mi->pieces);
  for (size_t i = 0; i < mi->file_count; i++)
    free (mi->files[i].path);
  free (mi->files);
  for (size_t t = 0; t < mi->tier_count; t++)
    {
      for (char **u = mi->tiers[t]; *u != NULL; u++)
        free (*u);
      free (mi->tiers[t]);
    }
  free (mi->tiers);
  for (size_t i = 0; i < mi->url_count; i++)
    free (mi->url_list[i]);
  free (mi->url_list);
  free (mi);
}

/* Size of one piece. */
uint32_t
bt_metainfo_piece_size (const struct bt_metainfo *mi, uint32_t index)
{
  if (index >= mi->piece_count)
    return 0;
  if (index + 1 < mi->piece_count)
    return mi->piece_length;
  return mi->total_length - (uint64_t) index * mi->piece_length;
}

/* Find a file by its path inside the torrent. */
int
bt_metainfo_find_file (const struct bt_metainfo *mi, const char *path)
{
  for (size_t i = 0; i < mi->file_count; i++)
    if (!mi->files[i].pad && strcmp (mi->files[i].path, path) == 0)
      return i;
  char names[256] = "";
  size_t used = 0;
  for (size_t i = 0; i < mi->file_count && used + 4 < sizeof names; i++)
    {
      if (mi->files[i].pad)
        continue;
      int n = snprintf (names + used, sizeof names - used, "%s%s",
                        used ? ", " : "", mi->files[i].path);
      if (n < 0)
        break;
      used += n;
    }
  if (used >= sizeof names)
    strcpy (names + sizeof names - 4, "...");
  return error_set (ENOENT, "no file \"%s\" in the torrent; it has: %s",
                    path, names);
}

/* Format the info-hash in hex. */
void
bt_info_hash_hex (const struct bt_metainfo *mi, char buf[41])
{
  static const char hex[] = "0123456789abcdef";
  for (int i = 0; i < 20; i++)
    {
      buf[2 * i] = hex[mi->info_hash[i] >> 4];
      buf[2 * i + 1] = hex[mi->info_hash[i] & 15];
    }
  buf[40] = '\0';
}
