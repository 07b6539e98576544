-- Argo CD health check for llamaft.io/LlamaFineTune.
--
-- Install it in argocd-cm (docs/gitops.md):
--   resource.customizations.health.llamaft.io_LlamaFineTune: |
--     <this file>
--
-- Maps the operator's status to Argo CD health:
--   Healthy      Succeeded=True, or a dry run that has been planned
--   Degraded     Failed=True (the message says why), or a child name taken by someone else
--   Suspended    spec.suspend is true (the volume and checkpoints are kept)
--   Progressing  everything else: not yet seen by the operator, a spec change not yet
--                observed, a step running or queued, or waiting for a Secret/PVC/ConfigMap
--                the run names (the operator retries until it appears)
-- Written for Argo CD's Lua 5.1 (gopher-lua); tests/unit/test_argocd_health.py runs it.

local hs = {}

local function condition(conditions, type_)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function describe(c)
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return c.reason or c.type
end

local status = obj.status
if status == nil or status.conditions == nil or #status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the llamaft operator to plan the run"
  return hs
end
local conditions = status.conditions

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local failed = condition(conditions, "Failed")
if failed ~= nil and failed.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(failed)
  return hs
end

local succeeded = condition(conditions, "Succeeded")
if succeeded ~= nil and succeeded.status == "True" then
  hs.status = "Healthy"
  hs.message = "Succeeded"
  if status.results ~= nil and status.results.headline ~= nil then
    hs.message = hs.message .. ": " .. status.results.headline
  end
  if status.publish ~= nil and status.publish.commit ~= nil then
    hs.message = hs.message .. " (published " .. status.publish.commit .. ")"
  end
  return hs
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Suspended: spec.suspend is true; unsuspend resumes from the last checkpoint"
  return hs
end

local planned = condition(conditions, "Planned")
if obj.spec ~= nil and obj.spec.dryRun == true and planned ~= nil and planned.status == "True" then
  hs.status = "Healthy"
  hs.message = "Planned (dry run): " .. describe(planned)
  return hs
end

-- A conflict a person must resolve; waiting on a missing reference resolves itself.
for _, c in ipairs(conditions) do
  if c.status == "False" and c.reason == "NameTaken" then
    hs.status = "Degraded"
    hs.message = describe(c)
    return hs
  end
end
for _, c in ipairs(conditions) do
  if c.status == "False" and (c.reason == "SecretMissing" or c.reason == "PvcMissing"
      or c.reason == "ConfigMapMissing") then
    hs.status = "Progressing"
    hs.message = "Waiting: " .. describe(c)
    return hs
  end
end

hs.status = "Progressing"
hs.message = status.phase or "Pending"
if status.progress ~= nil and status.progress.percent ~= nil then
  hs.message = hs.message .. " " .. status.progress.percent
end
if status.progress ~= nil and status.progress.eta ~= nil then
  hs.message = hs.message .. ", ETA " .. status.progress.eta
end
return hs
