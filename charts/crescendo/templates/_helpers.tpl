{{/*
Helper names as `helm create` writes them, for the crescendo chart.
*/}}

{{/* The chart's name (nameOverride wins). */}}
{{- define "crescendo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The fully qualified app name, truncated to 63 characters (a DNS label); the release name alone
when it already contains the chart's name.
*/}}
{{- define "crescendo.fullname" -}}
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

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "crescendo.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the chart. */}}
{{- define "crescendo.labels" -}}
helm.sh/chart: {{ include "crescendo.chart" . }}
{{ include "crescendo.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: crescendo
{{- end }}

{{/* Labels that select the operator's pod (immutable in a Deployment: keep them few). */}}
{{- define "crescendo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "crescendo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "crescendo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "crescendo.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The namespaces the operator watches, as a JSON list (empty when it watches all of them):
operator.watchNamespaces, or the release's namespace when that list is empty.
*/}}
{{- define "crescendo.watchedNamespaces" -}}
{{- if .Values.operator.watchAllNamespaces }}
{{- list | toJson }}
{{- else if .Values.operator.watchNamespaces }}
{{- .Values.operator.watchNamespaces | uniq | toJson }}
{{- else }}
{{- list .Release.Namespace | toJson }}
{{- end }}
{{- end }}

{{/* The operator image reference (tag defaults to the chart's appVersion). */}}
{{- define "crescendo.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
