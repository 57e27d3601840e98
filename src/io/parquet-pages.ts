/**
 * Page-level sanity checks of a parquet file before hyparquet decodes it.
 *
 * hyparquet sizes its arrays from the counts a page header declares (`num_values`,
 * `uncompressed_page_size`). A damaged or hostile header can declare hundreds of millions of values
 * in a page of a few bytes, and V8 then aborts the whole process ("Fatal JavaScript invalid size
 * error"), which no try/catch can stop. So every page header of the columns to be read is checked
 * first against what the file's own metadata allows:
 *   - a row group holds at most MAX_ROWS rows;
 *   - a page lies inside its column chunk, and its uncompressed size is at most the chunk's;
 *   - a page holds at most the row group's rows;
 *   - every column read is flat (top-level, not repeated): the tables here are flat, and the
 *     repetition levels of a repeated column decode into arrays as long as a damaged run says.
 */
import type { AsyncBuffer, FileMetaData } from 'hyparquet';
import { parquetHeader } from 'hyparquet/src/column.js';

/** Rows per row group this reader takes (far beyond any text dataset's row groups). */
export const MAX_ROWS = 2 ** 26;

/**
 * Throws an Error naming the row group, column and page when a page header of the `columns` (all
 * columns when omitted) declares more than the metadata allows (the caller names the file).
 */
export async function checkParquetPages(file: AsyncBuffer, metadata: FileMetaData, columns?: readonly string[]): Promise<void> {
  for (let i = 1; i < metadata.schema.length; i = skip(metadata, i)) {
    const e = metadata.schema[i]!;
    if (columns !== undefined && !columns.includes(e.name)) continue;
    if ((e.num_children ?? 0) > 0 || (e.repetition_type !== 'REQUIRED' && e.repetition_type !== 'OPTIONAL')) {
      const kind = (e.num_children ?? 0) > 0 ? 'nested' : e.repetition_type === 'REPEATED' ? 'repeated' : 'missing its repetition type';
      throw new Error(`column "${e.name}" is ${kind}: only flat columns (required or optional) are read`);
    }
  }
  for (const [g, group] of metadata.row_groups.entries()) {
    const rows = Number(group.num_rows);
    if (!(rows >= 0 && rows <= MAX_ROWS)) throw new Error(`row group ${g} declares ${group.num_rows} rows (at most ${MAX_ROWS} are read)`);
    for (const chunk of group.columns) {
      const meta = chunk.meta_data;
      if (meta === undefined) continue;
      const name = meta.path_in_schema.join('.');
      if (columns !== undefined && !columns.includes(meta.path_in_schema[0]!)) continue;
      const where = `row group ${g}, column "${name}"`;
      const start = Number(meta.dictionary_page_offset ?? meta.data_page_offset);
      const size = Number(meta.total_compressed_size);
      const limit = Number(meta.total_uncompressed_size);
      if (!(start >= 0 && size >= 0 && start + size <= file.byteLength)) throw new Error(`${where}: the column chunk lies outside the file`);
      const bytes = await file.slice(start, start + size);
      const reader = { view: new DataView(bytes), offset: 0 };
      for (let page = 0; reader.offset < size; page++) {
        let header: ReturnType<typeof parquetHeader>;
        try {
          header = parquetHeader(reader);
        } catch (err) {
          throw new Error(`${where}, page ${page}: the page header does not decode (${(err as Error).message})`, { cause: err });
        }
        const compressed = header.compressed_page_size;
        const uncompressed = header.uncompressed_page_size;
        if (!(compressed >= 0 && reader.offset + compressed <= size)) throw new Error(`${where}, page ${page}: the page runs past its column chunk`);
        if (!(uncompressed >= 0 && uncompressed <= Math.max(limit, compressed))) {
          throw new Error(`${where}, page ${page}: declares ${uncompressed} uncompressed bytes, more than its column chunk's ${limit}`);
        }
        const values = header.data_page_header?.num_values ?? header.data_page_header_v2?.num_values ?? header.dictionary_page_header?.num_values ?? 0;
        const bound = header.dictionary_page_header === undefined ? rows : MAX_ROWS;
        if (!(values >= 0 && values <= bound)) throw new Error(`${where}, page ${page}: declares ${values} values (at most ${bound})`);
        reader.offset += compressed;
      }
    }
  }
}

/** The index after element `i` and all its descendants. */
function skip(metadata: FileMetaData, i: number): number {
  const children = metadata.schema[i]!.num_children ?? 0;
  let next = i + 1;
  for (let c = 0; c < children && next < metadata.schema.length; c++) next = skip(metadata, next);
  return next;
}
