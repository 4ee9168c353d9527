"""Fast offscreen rendering of a MuJoCo model for small policy images.

Rendering is the CPU bottleneck of pixel RL here (software GL). The renderer therefore turns off shadows,
reflections, skybox and multisampling, sizes the offscreen buffer to the image, and renders only when the
environment needs an observation. Software GL spends most of a small frame on vertices (the Sawyer arm's meshes
hold ~68k triangles, drawn into 4096 pixels), so the meshes the renderer draws are simplified to the image's
resolution: vertex clustering on a grid of :func:`mesh_cell` metres (1 cm at 64 x 64), done on the GL copy only
(the physics' meshes are untouched). Renderers are tracked and closed at interpreter exit so that GL contexts are
never torn down in an arbitrary order (which prints tracebacks on EGL).
"""

from __future__ import annotations

import atexit
import os
import weakref

import numpy as np

# MetaWorld's corner cameras are mounted upside down: their images must have their rows flipped.
FLIPPED_CAMERAS = frozenset({"corner", "corner2", "corner3", "corner4"})
CAMERAS: tuple[str, ...] = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")

_LIVE: "weakref.WeakSet[FastRenderer]" = weakref.WeakSet()
_EXIT_HOOK = False


def _close_all() -> None:
    for r in list(_LIVE):
        r.close()


def _register_exit_hook() -> None:
    # Registered after mujoco's GL module has registered its own exit handler: handlers run last-in
    # first-out, so our renderers close while the GL display still exists.
    global _EXIT_HOOK
    if not _EXIT_HOOK:
        atexit.register(_close_all)
        _EXIT_HOOK = True


def ensure_gl_backend() -> None:
    """Pick a headless GL backend before mujoco is imported (EGL unless the user chose one)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    # llvmpipe starts a thread per core for every context; with one renderer per process one thread is faster.
    os.environ.setdefault("LP_NUM_THREADS", "1")


def check_cameras(cameras, model=None) -> tuple[str, ...]:
    cameras = tuple(cameras)
    valid = CAMERAS if model is None else tuple(model.camera(i).name for i in range(model.ncam))
    for cam in cameras:
        if cam not in valid:
            raise ValueError(f"unknown camera {cam!r}; valid cameras: {', '.join(valid)}")
    if len(set(cameras)) != len(cameras):
        raise ValueError(f"camera list {cameras} repeats a camera; name each camera once")
    return cameras


def parse_cameras(text: str, option: str = "--cameras") -> tuple[str, ...]:
    """A comma-separated camera list from the command line, checked: at least one camera, each known, none twice."""
    cameras = check_cameras(c.strip() for c in str(text).split(",") if c.strip())
    if not cameras:
        raise ValueError(f"{option} names no camera; e.g. {option} corner")
    return cameras


def project(model, data, camera: str, points, size: int) -> np.ndarray:
    """World points (n, 3) -> (n, 2) where ``camera`` draws them in its upright ``size`` x ``size`` image: (column,
    row) in pixels, pixel centres at integers (pinhole model of MuJoCo's camera: its pose this frame and ``fovy``)."""
    import mujoco

    cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    if cam < 0:
        raise ValueError(f"unknown camera {camera!r}; valid cameras: {', '.join(model.camera(i).name for i in range(model.ncam))}")
    rot = np.asarray(data.cam_xmat[cam], np.float64).reshape(3, 3)  # columns: the camera's x (right), y (up), z (back)
    c = (np.asarray(points, np.float64).reshape(-1, 3) - data.cam_xpos[cam]) @ rot
    depth = np.maximum(-c[:, 2], 1e-9)  # the camera looks along -z
    f = 0.5 * size / np.tan(np.deg2rad(model.cam_fovy[cam]) / 2)
    col = 0.5 * size + f * c[:, 0] / depth - 0.5
    row = 0.5 * size - f * c[:, 1] / depth - 0.5
    if camera in FLIPPED_CAMERAS:
        row = size - 1 - row
    return np.stack([col, row], 1)


def mesh_cell(size: int) -> float:
    """The grid (metres) meshes are simplified on for ``size`` x ``size`` images: 1 cm at 64 px, finer as images
    grow, full meshes from 512 px. At 64 px a pixel of the MetaWorld corner cameras spans 1.5-2 cm of the scene; on
    the quickstart tasks 1 cm moves a frame's pixels by 0.73-0.84 intensity levels on average (of 255), renders in
    ~43% of the time, and leaves no visible crack (2 cm does)."""
    return 0.0 if size >= 512 else 0.01 * 64 / size


def simplify_meshes(model, cell: float) -> tuple:
    """Rewrite every mesh's triangles in ``model`` in place by vertex clustering on a ``cell``-metre grid (each
    vertex moves to the first vertex of its cell; collapsed and repeated triangles go); returns what
    :func:`restore_meshes` needs. Only triangle lists change (faces and their normal / texcoord indices, face
    counts): vertices, convex hulls and everything the physics reads stay as they were."""
    m = model
    saved = (m.mesh_face.copy(), m.mesh_facenormal.copy(), m.mesh_facetexcoord.copy(), m.mesh_facenum.copy())
    for i in range(m.nmesh):
        va, vn, fa, fn = m.mesh_vertadr[i], m.mesh_vertnum[i], m.mesh_faceadr[i], m.mesh_facenum[i]
        if fn < 2:
            continue
        cells = np.floor(m.mesh_vert[va : va + vn] / cell).astype(np.int64)
        _, first, cluster = np.unique(cells, axis=0, return_index=True, return_inverse=True)  # first: lowest vertex per cell
        faces = first[cluster.reshape(-1)[m.mesh_face[fa : fa + fn]]]
        alive = np.flatnonzero((faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2]))
        _, once = np.unique(np.sort(faces[alive], axis=1), axis=0, return_index=True)
        keep = alive[np.sort(once)]
        if len(keep) == 0:
            continue
        k = len(keep)
        m.mesh_facenormal[fa : fa + k] = m.mesh_facenormal[fa : fa + fn][keep].copy()
        m.mesh_facetexcoord[fa : fa + k] = m.mesh_facetexcoord[fa : fa + fn][keep].copy()
        m.mesh_face[fa : fa + k] = faces[keep]
        m.mesh_facenum[i] = k
    return saved


def restore_meshes(model, saved: tuple) -> None:
    model.mesh_face[:], model.mesh_facenormal[:], model.mesh_facetexcoord[:], model.mesh_facenum[:] = saved


class FastRenderer:
    """Renders ``cameras`` of ``model`` at ``size`` x ``size``, upright, as uint8 HxWx3 arrays."""

    def __init__(self, model, size: int, cameras, cell: float | None = None) -> None:
        """``cell``: the grid (metres) the drawn meshes are simplified on; None: :func:`mesh_cell` of ``size``;
        0: the full meshes."""
        ensure_gl_backend()
        import mujoco

        self._mujoco = mujoco
        self.cameras = check_cameras(cameras, model)
        self.size = int(size)
        self.cell = mesh_cell(self.size) if cell is None else float(cell)
        if not self.cell >= 0:
            raise ValueError(f"mesh cell must be >= 0 metres (0: full meshes), got {cell}")
        model.vis.global_.offwidth = self.size
        model.vis.global_.offheight = self.size
        model.vis.quality.offsamples = 0
        saved = simplify_meshes(model, self.cell) if self.cell > 0 else None
        try:
            self._renderer = mujoco.Renderer(model, self.size, self.size)  # uploads the (simplified) meshes to GL
        except mujoco.FatalError as e:
            raise RuntimeError(
                f"no headless OpenGL context ({e}); set MUJOCO_GL=egl or osmesa before mujoco is first imported "
                f"and install libegl-mesa0 / libosmesa6 (make sysdeps)"
            ) from None
        finally:
            if saved is not None:
                restore_meshes(model, saved)
        flags = self._renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = False
        _register_exit_hook()
        self._cam_ids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, c) for c in self.cameras]
        self._decoys: list[tuple] = []
        self._copies: list[tuple] = []
        _LIVE.add(self)

    def set_decoys(self, geoms) -> None:
        """Visual-only geoms drawn into every rendered frame (decoy targets). Each is either a primitive,
        ``{"type": "sphere" | "box" | "cylinder", "pos": (3,), "size": (3,), "rgba": (4,)}``, or a copy of parts of
        the scene moved by an offset, ``{"copy": [(objtype, objid, rgba or None), ...], "offset": (3,)}``: every
        scene geom drawn for that model element (``mujoco.mjtObj`` type and id: a geom or a site) is drawn again
        at ``offset`` from where it is this frame, recoloured to ``rgba`` where given. They exist only in the
        rendered scene: the physics, the observation's proprio and ``info`` never see them. ``[]`` removes them."""
        types = {"sphere": self._mujoco.mjtGeom.mjGEOM_SPHERE, "box": self._mujoco.mjtGeom.mjGEOM_BOX,
                 "cylinder": self._mujoco.mjtGeom.mjGEOM_CYLINDER}  # fmt: skip
        prims, copies = [], []
        for g in geoms:
            if "copy" in g:
                parts = [(int(t), int(i), None if c is None else np.asarray(c, np.float32)) for t, i, c in g["copy"]]
                copies.append((parts, np.asarray(g["offset"], np.float64)))
                continue
            if g.get("type", "sphere") not in types:
                raise ValueError(f"unknown decoy geom type {g.get('type')!r}; valid: {', '.join(types)}")
            size = np.zeros(3) + np.asarray(g["size"], np.float64)
            prims.append((types[g.get("type", "sphere")], size, np.asarray(g["pos"], np.float64),
                          np.asarray(g.get("rgba", (1, 0, 0, 1)), np.float32)))  # fmt: skip
        self._decoys, self._copies = prims, copies

    def _add_decoys(self) -> None:
        scene = self._renderer.scene
        need = len(self._decoys) + sum(len(p) for p, _ in self._copies)
        if scene.ngeom + need > scene.maxgeom:
            raise RuntimeError(f"the rendered scene is full ({scene.maxgeom} geoms); draw fewer decoys")
        for gtype, size, pos, rgba in self._decoys:
            self._mujoco.mjv_initGeom(scene.geoms[scene.ngeom], gtype, size, pos, np.eye(3).flatten(), rgba)
            scene.ngeom += 1
        if not self._copies:
            return
        drawn = {}
        for i in range(scene.ngeom):
            drawn.setdefault((int(scene.geoms[i].objtype), int(scene.geoms[i].objid)), []).append(i)
        for parts, offset in self._copies:
            for objtype, objid, rgba in parts:
                for src in drawn.get((objtype, objid), ()):
                    dst = scene.geoms[scene.ngeom]
                    _copy_geom(scene.geoms[src], dst)
                    dst.pos[:] = scene.geoms[src].pos + offset
                    if rgba is not None:
                        dst.rgba[:] = rgba
                    scene.ngeom += 1

    def render(self, data) -> dict[str, np.ndarray]:
        out = {}
        for cam, cam_id in zip(self.cameras, self._cam_ids):
            self._renderer.update_scene(data, camera=cam_id)
            self._add_decoys()
            img = self._renderer.render()
            out[cam] = np.ascontiguousarray(img[::-1]) if cam in FLIPPED_CAMERAS else img
        return out

    def close(self) -> None:
        r = getattr(self, "_renderer", None)
        if r is not None:
            self._renderer = None
            try:
                r.close()
            except Exception:  # noqa: BLE001 - a context already gone at exit is not an error worth a traceback
                pass
        _LIVE.discard(self)

    def __del__(self) -> None:
        self.close()


_GEOM_FIELDS = ("type", "dataid", "objtype", "objid", "category", "matid", "texcoord", "segid", "emission", "specular",
                "shininess", "reflectance", "camdist", "modelrbound", "transparent")  # fmt: skip


def _copy_geom(src, dst) -> None:
    import mujoco

    f64 = np.float64
    mujoco.mjv_initGeom(dst, int(src.type), np.asarray(src.size, f64), np.asarray(src.pos, f64),
                        np.asarray(src.mat, f64).reshape(9), np.asarray(src.rgba, np.float32))  # clears the label  # fmt: skip
    for name in _GEOM_FIELDS:
        setattr(dst, name, getattr(src, name))
    dst.size[:] = src.size
    dst.pos[:] = src.pos
    dst.mat[:] = src.mat
    dst.rgba[:] = src.rgba
