/**
 * Escaping of data placed in the report page. Everything the page shows from a run folder (bios
 * are user data, method names and hooks come from configs) goes through one of these, so that no
 * text can open a tag, close a script or start an attribute.
 */

const HTML_ENTITIES: Readonly<Record<string, string>> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** `text` safe as HTML element content and as a quoted attribute value (also inside SVG). */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => HTML_ENTITIES[c]!);
}

/**
 * `value` as JSON safe inside `<script type="application/json">`: `<`, `>` and `&` become \u
 * escapes (so no `</script>` or `<!--` can appear), and so do U+2028/U+2029. JSON.parse reads it
 * back unchanged.
 */
export function jsonForScript(value: unknown): string {
  return JSON.stringify(value).replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
