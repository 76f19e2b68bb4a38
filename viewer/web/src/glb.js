// Fetching a GLB with progress, and reading what three.js does not: the JSON chunk's
// EXT_structural_metadata property table (feature index i <-> CityJSON id).
// GLB layout: glTF 2.0 §4.4 (12-byte header, then JSON and BIN chunks).
// Property tables: https://github.com/CesiumGS/glTF/tree/3d-tiles-next/extensions/2.0/Vendor/EXT_structural_metadata

const GLB_MAGIC = 0x46546c67; // "glTF"
const CHUNK_JSON = 0x4e4f534a;
const CHUNK_BIN = 0x004e4942;

/**
 * Fetch a binary resource, reporting progress as bytes arrive.
 *
 * The server may gzip the GLB (Content-Encoding), in which case Content-Length counts the
 * compressed bytes; the GLB header's own total length (bytes 8-12) is exact, so it wins as
 * soon as the first 12 bytes are in.
 *
 * @param {string} url
 * @param {{onProgress?: (loaded: number, total: number | null) => void, signal?: AbortSignal,
 *          response?: Promise<Response>}} [opts] `response`: a fetch of `url` already under way
 * @returns {Promise<ArrayBuffer>}
 */
export async function fetchGlb(url, { onProgress, signal, response: started } = {}) {
  const response = await (started ?? fetch(url, { signal }));
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.message) message = body.message;
    } catch {
      // not JSON: keep the status line
    }
    throw new Error(`cannot load the scene: ${message}`);
  }
  const encoded = response.headers.get('Content-Encoding');
  const length = Number(response.headers.get('Content-Length'));
  let total = !encoded && length > 0 ? length : null;
  if (!response.body) {
    const buf = await response.arrayBuffer();
    onProgress?.(buf.byteLength, buf.byteLength);
    return buf;
  }
  const reader = response.body.getReader();
  const chunks = [];
  let loaded = 0;
  let out = null;
  let headerRead = false;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (out && loaded + value.byteLength > out.byteLength) {
      // More bytes than the header announced: fall back to collecting chunks.
      chunks.push(out.subarray(0, loaded));
      out = null;
    }
    if (out) {
      out.set(value, loaded);
    } else {
      chunks.push(value);
    }
    loaded += value.byteLength;
    if (!headerRead && loaded >= 12) {
      headerRead = true;
      // Read the GLB header once: its total length lets us preallocate and report.
      const head = concat(chunks, loaded);
      const view = new DataView(head.buffer, head.byteOffset, 12);
      if (view.getUint32(0, true) === GLB_MAGIC) {
        total = view.getUint32(8, true);
        if (total >= loaded) {
          out = new Uint8Array(total);
          out.set(head, 0);
          chunks.length = 0;
        }
      }
    }
    onProgress?.(loaded, total);
  }
  const bytes = out ? out.subarray(0, loaded) : concat(chunks, loaded);
  onProgress?.(loaded, loaded);
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength
    ? bytes.buffer
    : bytes.slice().buffer;
}

function concat(chunks, size) {
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/**
 * Split a GLB into its JSON document and BIN chunk.
 *
 * @param {ArrayBuffer} buffer
 * @returns {{json: any, bin: Uint8Array | null}}
 */
export function readGlb(buffer) {
  const view = new DataView(buffer);
  if (buffer.byteLength < 20 || view.getUint32(0, true) !== GLB_MAGIC) {
    throw new Error('not a GLB file (bad magic)');
  }
  const total = Math.min(view.getUint32(8, true), buffer.byteLength);
  let at = 12;
  let json = null;
  let bin = null;
  while (at + 8 <= total) {
    const len = view.getUint32(at, true);
    const type = view.getUint32(at + 4, true);
    const start = at + 8;
    if (type === CHUNK_JSON) {
      json = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, start, len)));
    } else if (type === CHUNK_BIN && bin === null) {
      bin = new Uint8Array(buffer, start, len);
    }
    at = start + len + ((4 - (len % 4)) % 4);
  }
  if (!json) throw new Error('GLB without a JSON chunk');
  return { json, bin };
}

const COMPONENT_ARRAYS = {
  INT8: Int8Array,
  UINT8: Uint8Array,
  INT16: Int16Array,
  UINT16: Uint16Array,
  INT32: Int32Array,
  UINT32: Uint32Array,
  INT64: BigInt64Array,
  UINT64: BigUint64Array,
  FLOAT32: Float32Array,
  FLOAT64: Float64Array,
};

function viewBytes(json, bin, index) {
  const bv = json.bufferViews[index];
  if (!bv || !bin) throw new Error(`property table: buffer view ${index} missing`);
  return bin.subarray(bv.byteOffset || 0, (bv.byteOffset || 0) + bv.byteLength);
}

function typed(bytes, Ctor) {
  // Copy so the typed array is aligned whatever the buffer view's offset.
  const copy = bytes.slice();
  return new Ctor(copy.buffer, 0, Math.floor(copy.byteLength / Ctor.BYTES_PER_ELEMENT));
}

/**
 * Read the first EXT_structural_metadata property table: strings and scalars by column.
 *
 * @param {any} json the glTF document
 * @param {Uint8Array | null} bin the BIN chunk
 * @returns {{count: number, strings: Record<string, string[]>, numbers: Record<string, Float64Array>}}
 *   numbers hold NaN where the column's noData value is.
 */
export function readPropertyTable(json, bin) {
  const ext = json.extensions?.EXT_structural_metadata;
  const table = ext?.propertyTables?.[0];
  if (!table) throw new Error('the scene has no EXT_structural_metadata property table');
  const cls = ext.schema?.classes?.[table.class]?.properties ?? {};
  const count = table.count;
  const strings = {};
  const numbers = {};
  const decoder = new TextDecoder();
  for (const [name, col] of Object.entries(table.properties ?? {})) {
    const def = cls[name] ?? {};
    if (def.type === 'STRING') {
      const values = viewBytes(json, bin, col.values);
      const OffsetArray = COMPONENT_ARRAYS[col.stringOffsetType ?? 'UINT32'];
      const offsets = typed(viewBytes(json, bin, col.stringOffsets), OffsetArray);
      const out = new Array(count);
      for (let i = 0; i < count; i++) {
        out[i] = decoder.decode(values.subarray(Number(offsets[i]), Number(offsets[i + 1])));
      }
      strings[name] = out;
    } else if (def.type === 'SCALAR' && !def.array) {
      const Ctor = COMPONENT_ARRAYS[def.componentType];
      if (!Ctor) continue;
      const raw = typed(viewBytes(json, bin, col.values), Ctor);
      const out = new Float64Array(count);
      const noData = def.noData;
      for (let i = 0; i < count; i++) {
        const v = Number(raw[i]);
        out[i] = noData !== undefined && v === noData ? NaN : v;
      }
      numbers[name] = out;
    }
  }
  if (!strings.id) throw new Error('the property table has no "id" column');
  return { count, strings, numbers };
}
