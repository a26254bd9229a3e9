"""`hnmine report`: `write.write_report` reads a work dir (`data`) and renders it as HTML (`html`,
with `svg` charts) or Markdown (`markdown`)."""
