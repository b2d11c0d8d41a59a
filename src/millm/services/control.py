"""The one place where a change to the model, the SAE, the steering or a profile reaches the others.

Routes (and the in-server MCP backend) call `ControlService` for every state change whose
effects cross services, and nothing else decides them:

- **Model and SAE changes** (`load_model`, `unload_model`, `attach_sae`, `detach_sae`): after
  the change, server-wide steering that no longer fits (`SteeringService.fits`: an index past
  the new d_sae, no SAE left, or an active profile made for another model or SAE) is cleared and
  the active profile forgotten. Unloading the model or detaching the SAE always clears it.
- **Steering** (`set_steering`, `patch_steering`, `clear_steering`, `set_steering_enabled`):
  steering set by hand no longer comes from a profile, so the active profile is forgotten (it is
  neither shown as active nor restored at the next start).
- **Profiles** (`activate_profile`, `deactivate_profile`, `create_profile`, `update_profile`,
  `delete_profile`, `import_profiles`, `save_steering`, `restore_active_profile`): activation
  checks the profile with `SteeringService.check_fits` (the only compatibility check) before
  it is recorded; an edit or import that replaces the active profile re-applies it, or, if it no
  longer fits, deactivates it and clears the steering; deleting the active profile clears it.
  New and edited profiles naming the loaded model and attached SAE are checked against the
  live d_sae.

Profile store calls are synchronous SQLAlchemy work and run in a thread here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from millm.errors import InvalidRequest, MillmError
from millm.protocol import profiles as pp
from millm.protocol.common import SteeringMode
from millm.services.models import LoadOptions, ModelService, SwapResult
from millm.services.profile_formats import DSaeResolver
from millm.services.profiles import OnConflict, ProfileService
from millm.services.saes import AttachedSae, SaeService
from millm.services.steering import NamedSteering, ServerSteering, SteeringService

log = logging.getLogger(__name__)


class ControlService:
    def __init__(self, *, models: ModelService, saes: SaeService, steering: SteeringService,
                 profiles: ProfileService, model_names: Callable[[], tuple[str, ...]],
                 labels: Callable[[], dict[int, str]]) -> None:
        self.models = models
        self.saes = saes
        self.steering = steering
        self.profiles = profiles
        self._model_names = model_names  # the ids a profile may name the loaded model by
        self._labels = labels  # the attached SAE's feature labels (for a saved profile)

    # ------------------------------------------------------------------ model and SAE

    async def load_model(self, source: str, *, options: LoadOptions, force: bool = False) -> SwapResult:
        result = await self.models.load(source, options=options, force=force)
        await self._clear_if_invalid(always=result.sae_message is not None)
        return result

    async def unload_model(self) -> None:
        await self.models.unload()
        await self.clear_steering()

    async def attach_sae(self, source: str, *, sae_id: str | None = None, layer: int | None = None,
                         revision: str | None = None, format: str | None = None) -> AttachedSae:
        att = await self.saes.attach(source, sae_id=sae_id, layer=layer, revision=revision,
                                     hint={"format": format} if format else None)
        await self._clear_if_invalid()
        return att

    async def detach_sae(self) -> None:
        await self.saes.detach()
        await self.clear_steering()

    async def _clear_if_invalid(self, *, always: bool = False) -> None:
        if always or not self.steering.fits():
            if self.steering.state.features:
                log.info("server-wide steering cleared: it does not fit the model and SAE now loaded")
            await self.clear_steering()

    # ------------------------------------------------------------------ server-wide steering

    async def set_steering(self, *, features: list[tuple[int, float]], mode: SteeringMode = "add",
                           normalize: bool = False, steer_special_tokens: bool = True,
                           scale: float = 1.0) -> ServerSteering:
        self.steering.set(features=features, mode=mode, normalize=normalize,
                          steer_special_tokens=steer_special_tokens, scale=scale)
        await self._forget_active_profile()
        return self.steering.state

    async def patch_steering(self, *, features: list[tuple[int, float | None]], mode: SteeringMode | None = None,
                             scale: float | None = None) -> ServerSteering:
        self.steering.patch(features=features, mode=mode, scale=scale)
        await self._forget_active_profile()
        return self.steering.state

    async def clear_steering(self) -> ServerSteering:
        """No server-wide steering, and no active profile."""
        self.steering.clear()
        await self._forget_active_profile()
        return self.steering.state

    def set_steering_enabled(self, enabled: bool) -> ServerSteering:
        """Turn the server-wide steering on or off (its features and the active profile are kept)."""
        return self.steering.set_enabled(enabled)

    async def _forget_active_profile(self) -> None:
        await asyncio.to_thread(self.profiles.deactivate)

    # ------------------------------------------------------------------ profiles

    async def activate_profile(self, name: str) -> pp.ProfilePublic:
        """Steer every request that brings no steering of its own with `name`; a 400 when it does not fit."""
        profile = await asyncio.to_thread(self.profiles.get, name)
        self.steering.activate(NamedSteering.of(profile))
        return await asyncio.to_thread(self.profiles.activate, name)

    async def deactivate_profile(self) -> None:
        await self.clear_steering()

    def restore_active_profile(self) -> None:
        """At start-up: steer with the profile that was active, if it still fits. Blocking."""
        active = self.profiles.get_active()
        if active is None:
            return
        try:
            self.steering.activate(NamedSteering.of(active))
            log.info("restored active profile %s", active.name)
        except MillmError as e:
            log.warning("active profile %s was not restored: %s", active.name, e.message)

    def live_d_sae(self) -> DSaeResolver:
        """d_sae of the attached SAE for a profile naming the loaded model and that SAE, else None."""
        info, models = self.saes.info(), self._model_names()

        def resolve(model: str | None, sae: str | None) -> int | None:
            return info.d_sae if info is not None and model in models and sae == info.sae_id else None

        return resolve

    async def create_profile(self, body: pp.ProfileCreate) -> pp.ProfilePublic:
        return await asyncio.to_thread(self.profiles.create, body, d_sae_resolver=self.live_d_sae())

    async def update_profile(self, name: str, body: pp.ProfileUpdate, *, if_match: str | None = None
                             ) -> pp.ProfilePublic:
        """Apply the fields set in `body` at the version it gives (else the `If-Match` ETag's); an edited active
        profile steers with its new content at once."""
        if body.version is None and if_match is not None:
            body = body.model_copy(update={"version": version_from_if_match(if_match)})
        profile = await asyncio.to_thread(self.profiles.update, name, body, d_sae_resolver=self.live_d_sae())
        return await self._reapply_if_active(profile)

    async def delete_profile(self, name: str, *, version: int | None = None, if_match: str | None = None) -> None:
        """Delete (at `version` or the `If-Match` ETag's, when given); deleting the active profile clears the
        steering."""
        if version is None and if_match is not None:
            version = version_from_if_match(if_match)
        if await asyncio.to_thread(self.profiles.delete, name, version=version):
            self.steering.clear()

    async def import_profiles(self, raw: bytes | str | dict[str, Any] | list[Any], *,
                              on_conflict: OnConflict = "error", name: str | None = None) -> pp.ImportResult:
        result = await asyncio.to_thread(self.profiles.import_document, raw, on_conflict=on_conflict, name=name,
                                         d_sae_resolver=self.live_d_sae())
        # on_conflict=replace may have overwritten the active profile: steer with the new content.
        result.profiles = [await self._reapply_if_active(profile) for profile in result.profiles]
        return result

    async def save_steering(self, name: str, description: str = "") -> pp.ProfilePublic:
        """Save the server-wide steering, with the loaded model and attached SAE, as a new profile."""
        att, model = self.saes.attached, self.models.served_name()
        if att is None or model is None:
            raise InvalidRequest("attach an SAE and set steering before saving it as a profile", param="name")
        s = self.steering.state
        labels = self._labels()
        create = pp.ProfileCreate(
            name=name, description=description, model=model,
            sae=pp.SaeRef(id=att.sae_id, hook_name=att.hook_name, layer=att.hookpoint.layer, d_sae=att.sae.cfg.d_sae,
                          repo_id=att.source.repo_id, path=att.source.path, revision=att.source.revision),
            mode=s.mode, normalize=s.normalize,
            features=[pp.SteeringFeature(index=i, strength=v, label=s.labels.get(i) or labels.get(i))
                      for i, v in sorted(s.features.items())],
            scale=None if s.scale == 1 else s.scale,
        )
        return await asyncio.to_thread(self.profiles.create, create)

    async def _reapply_if_active(self, profile: pp.ProfilePublic) -> pp.ProfilePublic:
        """Re-apply an edited active profile; one edited to fit another model or SAE stops steering."""
        if not profile.active:
            return profile
        try:
            self.steering.activate(NamedSteering.of(profile))
        except MillmError as exc:
            log.warning("active profile %s no longer fits and was deactivated: %s", profile.name, exc.message)
            await self.clear_steering()
            return profile.model_copy(update={"active": False})
        return profile


def version_from_if_match(if_match: str) -> int:
    version = pp.version_from_etag(if_match)
    if version is None:
        raise InvalidRequest(f"If-Match {if_match!r} is not an ETag of this API", param="If-Match")
    return version
