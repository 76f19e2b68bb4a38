// Comment pins in the 3D view: one screen-sized sprite per comment, its tip at the comment's
// anchor point (scene coordinates), colored by category; drawn over the city so a pin on a
// far wall is never lost.

import * as THREE from 'three';

const PIN_PX = { w: 22, h: 30 };
const SELECTED_SCALE = 1.35;
const TEX = { w: 64, h: 88 };

/** The 3D pins of a session's comments, owned by one Viewer. */
export class Pins {
  /** @param {import('./viewer.js').Viewer} viewer */
  constructor(viewer) {
    this.viewer = viewer;
    this.group = new THREE.Group();
    this.group.name = 'comment-pins';
    this.group.renderOrder = 20;
    viewer.scene.add(this.group);
    /** @type {Map<string, {sprite: THREE.Sprite, point: THREE.Vector3, color: string}>} */
    this.pins = new Map();
    this.textures = new Map();
    this.selected = null;
    this.draft = null;
    viewer.addEventListener('camera', () => this._rescale());
    window.addEventListener('resize', () => this._rescale());
  }

  _texture(color) {
    let tex = this.textures.get(color);
    if (tex) return tex;
    const c = document.createElement('canvas');
    c.width = TEX.w;
    c.height = TEX.h;
    const g = c.getContext('2d');
    const r = TEX.w / 2 - 4;
    const cx = TEX.w / 2;
    const cy = r + 3;
    g.beginPath();
    g.moveTo(cx, TEX.h - 2);
    g.bezierCurveTo(cx - 6, cy + r * 0.9, cx - r, cy + r * 0.5, cx - r, cy);
    g.arc(cx, cy, r, Math.PI, 0);
    g.bezierCurveTo(cx + r, cy + r * 0.5, cx + 6, cy + r * 0.9, cx, TEX.h - 2);
    g.closePath();
    g.fillStyle = color;
    g.fill();
    g.lineWidth = 4;
    g.strokeStyle = '#ffffff';
    g.stroke();
    g.beginPath();
    g.arc(cx, cy, r * 0.38, 0, Math.PI * 2);
    g.fillStyle = '#ffffff';
    g.fill();
    tex = new THREE.CanvasTexture(c);
    tex.colorSpace = THREE.SRGBColorSpace;
    this.textures.set(color, tex);
    return tex;
  }

  _sprite(color) {
    const material = new THREE.SpriteMaterial({
      map: this._texture(color),
      depthTest: false,
      depthWrite: false,
      sizeAttenuation: false,
      transparent: true,
    });
    const sprite = new THREE.Sprite(material);
    sprite.center.set(0.5, 0); // the tip touches the anchor point
    sprite.renderOrder = 20;
    return sprite;
  }

  /** Add or move the pin of a comment. */
  set(id, point, color) {
    let pin = this.pins.get(id);
    if (pin && pin.color !== color) {
      this.remove(id);
      pin = undefined;
    }
    if (!pin) {
      const sprite = this._sprite(color);
      sprite.userData.commentId = id;
      this.group.add(sprite);
      pin = { sprite, point: new THREE.Vector3(), color };
      this.pins.set(id, pin);
    }
    pin.point.set(point.x, point.y, point.z);
    pin.sprite.position.copy(pin.point);
    this._scale(pin.sprite, id === this.selected);
    this.viewer.needsRender = true;
  }

  /** Remove the pin of a comment (no-op if it has none). */
  remove(id) {
    const pin = this.pins.get(id);
    if (!pin) return;
    this.group.remove(pin.sprite);
    pin.sprite.material.dispose(); // the texture is shared per color
    this.pins.delete(id);
    if (this.selected === id) this.selected = null;
    this.viewer.needsRender = true;
  }

  /** Ids that have a pin. */
  ids() {
    return [...this.pins.keys()];
  }

  /** Emphasize one pin (null: none). */
  highlight(id) {
    const prev = this.selected;
    this.selected = id;
    for (const x of [prev, id]) {
      const pin = x && this.pins.get(x);
      if (pin) this._scale(pin.sprite, x === id);
    }
    this.viewer.needsRender = true;
  }

  /** Show a provisional pin (the place a comment being written points at); null hides it. */
  setDraft(point) {
    if (!point) {
      if (this.draft) {
        this.group.remove(this.draft);
        this.draft.material.dispose();
        this.draft = null;
      }
      this.viewer.needsRender = true;
      return;
    }
    if (!this.draft) {
      this.draft = this._sprite('#111111');
      this.group.add(this.draft);
    }
    this.draft.position.set(point.x, point.y, point.z);
    this._scale(this.draft, true);
    this.viewer.needsRender = true;
  }

  /** The anchor of a pin on the page (CSS pixels), or null when the comment has no pin. */
  position(id) {
    const pin = this.pins.get(id);
    if (!pin) return null;
    const p = this.viewer.project(pin.point);
    return { x: p.x, y: p.y, visible: p.visible && pin.sprite.visible };
  }

  /** The comment whose pin is under CSS coordinates, or null. */
  hit(x, y) {
    const sprites = [...this.pins.values()].map((p) => p.sprite).filter((s) => s.visible);
    if (!sprites.length) return null;
    const hits = this.viewer.intersect(x, y, sprites);
    return hits.length ? hits[0].object.userData.commentId : null;
  }

  /** Sprites with sizeAttenuation off are sized in view-height units: keep them N pixels. */
  _scale(sprite, big) {
    const h = this.viewer.canvas.getBoundingClientRect().height || 1;
    const k = (2 * Math.tan((this.viewer.camera.fov * Math.PI) / 360)) / h;
    const s = big ? SELECTED_SCALE : 1;
    sprite.scale.set(PIN_PX.w * k * s, PIN_PX.h * k * s, 1);
  }

  _rescale() {
    for (const [id, pin] of this.pins) this._scale(pin.sprite, id === this.selected);
    if (this.draft) this._scale(this.draft, true);
  }

  /** Remove every pin and free the textures. */
  dispose() {
    for (const id of [...this.pins.keys()]) this.remove(id);
    this.setDraft(null);
    for (const t of this.textures.values()) t.dispose();
    this.textures.clear();
    this.viewer.scene.remove(this.group);
  }
}
