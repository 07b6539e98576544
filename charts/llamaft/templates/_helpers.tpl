{{/* Chart name, or nameOverride. */}}
{{- define "llamaft.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object name prefix: <release>-<chart>, or the release name when it already contains the chart name. */}}
{{- define "llamaft.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "llamaft.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "llamaft.labels" -}}
helm.sh/chart: {{ include "llamaft.chart" . }}
app.kubernetes.io/name: {{ include "llamaft.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llamaft
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of the operator pods (immutable in a Deployment: keep them small). */}}
{{- define "llamaft.operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llamaft.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "llamaft.operator.labels" -}}
{{ include "llamaft.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "llamaft.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (printf "%s-operator" (include "llamaft.fullname" .)) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* <registry>/<repository>@<digest> or <registry>/<repository>:<tag or appVersion>. */}}
{{- define "llamaft.image" -}}
{{- $image := index . 0 }}
{{- $root := index . 1 }}
{{- $ref := printf "%s/%s" $image.registry $image.repository }}
{{- if not $image.registry }}{{ $ref = $image.repository }}{{ end }}
{{- if $image.digest }}
{{- printf "%s@%s" $ref $image.digest }}
{{- else }}
{{- printf "%s:%s" $ref (default $root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{- define "llamaft.peeringName" -}}
{{- default (include "llamaft.fullname" .) .Values.operator.peering.name }}
{{- end }}

{{/* Namespaces that get the trainer ServiceAccount and Role, one per line, deduplicated. */}}
{{- define "llamaft.trainerNamespaces" -}}
{{- $namespaces := .Values.trainer.namespaces }}
{{- if not $namespaces }}
{{- $namespaces = prepend .Values.watchNamespaces .Release.Namespace }}
{{- end }}
{{- range (uniq $namespaces) }}
{{ . }}
{{- end }}
{{- end }}

{{/* The operator's rules on namespaced objects: the same in the Role and in the ClusterRole.
Each verb is one that operator/llamaft_operator/k8s.py or kopf uses; tests/cluster/test_helm.py
runs the operator as this ServiceAccount through a whole fine-tune. */}}
{{- define "llamaft.operator.rules" -}}
# The fine-tunes: kopf lists and watches them, the reconcile reads one. No create, update, patch
# or delete: the operator cannot change a spec or metadata, so it never causes GitOps drift.
- apiGroups: ["llamaft.io"]
  resources: ["llamafinetunes"]
  verbs: ["get", "list", "watch"]
# Conditions, plan, results: one merge patch per reconcile.
- apiGroups: ["llamaft.io"]
  resources: ["llamafinetunes/status"]
  verbs: ["get", "patch"]
# Children carry owner references with blockOwnerDeletion, which clusters enforcing
# OwnerReferencesPermissionEnforcement (e.g. OpenShift) allow only with update on finalizers.
- apiGroups: ["llamaft.io"]
  resources: ["llamafinetunes/finalizers"]
  verbs: ["update"]
# The steps. kopf watches them; suspend and re-runs delete them.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
# The run plan (re-planned once the data is measured), the work and model-cache volumes and the
# multi-node rendezvous Service: created once under deterministic names, deleted with the run
# through owner references (so no delete here).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims", "services"]
  verbs: ["get", "create"]
# Secrets, by name only (no list, no watch): to check that the Secrets a run names exist and have
# their keys, so a missing one gives a condition instead of a pod stuck in ContainerCreating, and
# to read the completion-webhook URL. Key values are dropped on read, never logged, never put in
# status or Events; the Hub token reaches only the publish pod, as a mounted file.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# The steps' pods: their termination messages are the steps' results. The Job controller
# creates them; the operator only lists them by label.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list"]
# An Event for each step, and kopf's warnings.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- if and .Values.operator.peering.enabled .Values.watchNamespaces }}
# kopf peering (namespaced): the replicas announce themselves in the peering object's status.
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- if .Values.trainer.rbac.managedByOperator }}
# trainer.rbac.managedByOperator: create the trainer's ServiceAccount, Role and RoleBinding where a
# fine-tune runs. RBAC's escalation check limits the Roles it can create or bind to rights it
# holds itself; it creates only `patch llamafinetunes/status`.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "create"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "create"]
{{- end }}
{{- end }}

{{/* The operator's settings (operator/llamaft_operator/settings.py reads LLAMAFT_*). */}}
{{- define "llamaft.operator.env" -}}
- name: LLAMAFT_NAMESPACES
  value: {{ join "," .Values.watchNamespaces | quote }}
- name: LLAMAFT_TRAINER_IMAGE
  value: {{ include "llamaft.image" (list .Values.trainer.image .) | quote }}
- name: LLAMAFT_IMAGE_PULL_POLICY
  value: {{ .Values.trainer.image.pullPolicy | quote }}
- name: LLAMAFT_IMAGE_PULL_SECRETS
  value: {{ join "," .Values.trainer.imagePullSecrets | quote }}
- name: LLAMAFT_TRAINER_SERVICE_ACCOUNT
  value: {{ .Values.trainer.serviceAccount.name | quote }}
- name: LLAMAFT_MANAGE_TRAINER_RBAC
  value: {{ .Values.trainer.rbac.managedByOperator | quote }}
- name: LLAMAFT_PROGRESS_INTERVAL
  value: {{ .Values.trainer.progressIntervalSeconds | quote }}
{{- with .Values.gpu.catalogue }}
- name: LLAMAFT_GPU_CATALOGUE
  value: {{ toJson . | quote }}
{{- end }}
- name: LLAMAFT_DEFAULT_GPU_TYPE
  value: {{ .Values.gpu.defaultType | quote }}
{{- if not (kindIs "invalid" .Values.gpu.pricePerGpuHour) }}
- name: LLAMAFT_PRICE_PER_GPU_HOUR
  value: {{ .Values.gpu.pricePerGpuHour | quote }}
{{- end }}
- name: LLAMAFT_STORAGE_CLASS
  value: {{ .Values.storage.storageClassName | quote }}
- name: LLAMAFT_WORK_ACCESS_MODE
  value: {{ .Values.storage.workAccessMode | quote }}
- name: LLAMAFT_MODEL_CACHE_CLAIM
  value: {{ .Values.storage.modelCache.claimName | quote }}
- name: LLAMAFT_MODEL_CACHE_SIZE
  value: {{ .Values.storage.modelCache.size | quote }}
- name: LLAMAFT_MODEL_CACHE_ACCESS_MODE
  value: {{ .Values.storage.modelCache.accessMode | quote }}
- name: LLAMAFT_LIVENESS_ENDPOINT
  value: {{ printf "http://0.0.0.0:%d/healthz" (int .Values.operator.healthPort) | quote }}
- name: LLAMAFT_METRICS_PORT
  value: {{ ternary .Values.metrics.port 0 .Values.metrics.enabled | quote }}
{{- if .Values.operator.peering.enabled }}
- name: LLAMAFT_PEERING
  value: {{ include "llamaft.peeringName" . | quote }}
{{- end }}
{{- end }}
