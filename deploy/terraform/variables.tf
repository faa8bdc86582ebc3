# Inputs of the stripe-worker module. deploy/README.md explains each one and the order of
# the deployment steps.

variable "name_prefix" {
  description = "Prefix of every resource name, the same value the worker gets as --prefix / STRIPE_WORKER_PREFIX (e.g. ai-nexus-dev-stripe). Names: <prefix>-event-bus, <prefix>-<domain>-events[-dlq], <prefix>-<domain>_events-rule, <prefix>-events-archive, <prefix>-dedupe, <prefix>-state."
  type        = string

  validation {
    # 33 characters keeps the tightest derived name, <prefix>-events-archive, within
    # EventBridge's 48-character limit for archive names (rule names allow 64).
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,31}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 3 to 33 characters of a-z, 0-9 and -, starting and ending with a letter or digit."
  }
}

variable "tenants" {
  description = "Tenant ids served by this deployment. For each one the module creates two empty Secrets Manager secrets (webhook signing secrets and Stripe API restricted key) whose values an operator sets; the ECS task definitions and the Kubernetes secret files use the same tenant ids as names."
  type        = list(string)
  default     = ["default"]

  validation {
    condition     = length(var.tenants) > 0 && alltrue([for t in var.tenants : can(regex("^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$", t))])
    error_message = "tenants must be a non-empty list of ids of 1 to 64 characters of A-Z a-z 0-9 _ . - not starting with a dot (the ids are URL path segments and file names)."
  }

  validation {
    condition     = length(distinct(var.tenants)) == length(var.tenants)
    error_message = "tenants must not repeat an id."
  }
}

variable "enable_stripe_partner_events" {
  description = "Receive Stripe event destinations (the EventBridge partner event source). When true, the module attaches one partner event bus per name in stripe_partner_event_source_names and forwards every event on it to the custom bus, where the same domain rules route it."
  type        = bool
  default     = false
}

variable "stripe_partner_event_source_names" {
  description = "Partner event source names that Stripe created for this account's event destinations (aws.partner/stripe.com/ed_...), one per destination. Each source must exist (pending) in the account before apply: create the event destination in Stripe first."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for s in var.stripe_partner_event_source_names : can(regex("^aws\\.partner/stripe\\.com/[A-Za-z0-9_.-]+$", s))])
    error_message = "Every partner event source name must look like aws.partner/stripe.com/ed_..."
  }
}

variable "archive_retention_days" {
  description = "How long the bus archive keeps every event for replay (days; 0 keeps events forever)."
  type        = number
  default     = 90

  validation {
    condition     = var.archive_retention_days >= 0 && floor(var.archive_retention_days) == var.archive_retention_days
    error_message = "archive_retention_days must be a whole number >= 0."
  }
}

variable "max_receive_count" {
  description = "Receives of a still-failing message before SQS moves it to the domain's DLQ. Keep it equal to the worker's max_receive_count (STRIPE_WORKER_MAX_RECEIVE_COUNT)."
  type        = number
  default     = 5

  validation {
    condition     = var.max_receive_count >= 1 && var.max_receive_count <= 1000 && floor(var.max_receive_count) == var.max_receive_count
    error_message = "max_receive_count must be a whole number from 1 to 1000."
  }
}

variable "visibility_timeout_seconds" {
  description = "Visibility timeout of the domain queues. Keep it equal to the worker's visibility_timeout_secs (STRIPE_WORKER_VISIBILITY_TIMEOUT_SECS); the worker extends it for long messages. Also the base of the processing-time alarm."
  type        = number
  default     = 30

  validation {
    condition     = var.visibility_timeout_seconds >= 5 && var.visibility_timeout_seconds <= 43200 && floor(var.visibility_timeout_seconds) == var.visibility_timeout_seconds
    error_message = "visibility_timeout_seconds must be a whole number from 5 to 43200."
  }
}

variable "message_retention_seconds" {
  description = "How long a domain queue keeps an unprocessed message (seconds). DLQs always keep messages for the SQS maximum of 14 days so there is time to redrive them."
  type        = number
  default     = 345600

  validation {
    condition     = var.message_retention_seconds >= 60 && var.message_retention_seconds <= 1209600
    error_message = "message_retention_seconds must be from 60 to 1209600 (14 days)."
  }
}

variable "log_retention_days" {
  description = "Retention of the all-events monitoring log group (days). Must be a value CloudWatch Logs accepts."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be one of the retention periods CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)."
  }
}

variable "event_log_group_name" {
  description = "CloudWatch log group that receives every event on the bus (monitoring and debugging). Give each environment its own name when several share an account."
  type        = string
  default     = "/aws/events/stripe-billing"

  validation {
    # EventBridge writes only to log groups under /aws/events/ with the resource policy the
    # module creates.
    condition     = can(regex("^/aws/events/[A-Za-z0-9_./#-]{1,400}$", var.event_log_group_name))
    error_message = "event_log_group_name must start with /aws/events/ and use only A-Z a-z 0-9 _ . / # -."
  }
}

variable "deletion_protection" {
  description = "Protect the DynamoDB tables (dedupe records and billing state) from deletion. Turn off only to tear down a test environment."
  type        = bool
  default     = true
}

variable "alarm_sns_topic_arn" {
  description = "SNS topic that receives alarm and OK notifications. null creates the alarms without actions (visible in the console only)."
  type        = string
  default     = null

  validation {
    condition     = var.alarm_sns_topic_arn == null || can(regex("^arn:[a-z-]+:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]+$", var.alarm_sns_topic_arn))
    error_message = "alarm_sns_topic_arn must be an SNS topic ARN or null."
  }
}

variable "rule_failed_invocations_threshold" {
  description = "Alarm when a rule's FailedInvocations (events it could not deliver to its queue or bus) exceed this many in 10 minutes."
  type        = number
  default     = 5

  validation {
    condition     = var.rule_failed_invocations_threshold >= 0
    error_message = "rule_failed_invocations_threshold must be >= 0."
  }
}

variable "handler_errors_threshold" {
  description = "Alarm when a domain's handler errors (worker metric handler_errors_metric_name) exceed this many in 5 minutes."
  type        = number
  default     = 5

  validation {
    condition     = var.handler_errors_threshold >= 0
    error_message = "handler_errors_threshold must be >= 0."
  }
}

variable "processing_time_ratio" {
  description = "Alarm when a domain's mean processing time over 5 minutes exceeds this share of visibility_timeout_seconds: messages then risk becoming visible again while still being worked on."
  type        = number
  default     = 0.8

  validation {
    condition     = var.processing_time_ratio > 0 && var.processing_time_ratio <= 1
    error_message = "processing_time_ratio must be in (0, 1]."
  }
}

variable "oldest_message_age_threshold_seconds" {
  description = "Alarm when the oldest message in a domain queue has waited longer than this (seconds): the workers are not keeping up or are down."
  type        = number
  default     = 900

  validation {
    condition     = var.oldest_message_age_threshold_seconds >= 60
    error_message = "oldest_message_age_threshold_seconds must be >= 60."
  }
}

variable "app_metric_namespace" {
  description = "CloudWatch namespace of the worker's own metrics, as the OpenTelemetry collector (awsemf exporter) publishes them."
  type        = string
  default     = "StripeWorker"

  validation {
    condition     = length(var.app_metric_namespace) > 0 && length(var.app_metric_namespace) <= 255 && !startswith(var.app_metric_namespace, "AWS/")
    error_message = "app_metric_namespace must be 1 to 255 characters and must not start with AWS/."
  }
}

variable "handler_errors_metric_name" {
  description = "Name of the worker's dead-letter counter in app_metric_namespace (dimension `domain`): every message a handler could not apply ends there. The OTel name, as the collector's awsemf exporter publishes it (deploy/otel-collector/config.yaml)."
  type        = string
  default     = "stripe_worker.messages.dead_lettered"

  validation {
    condition     = length(var.handler_errors_metric_name) > 0
    error_message = "handler_errors_metric_name must not be empty."
  }
}

variable "processing_time_metric_name" {
  description = "Name of the worker's per-message processing time histogram, in seconds, in app_metric_namespace (dimension `domain`). The OTel name, as the collector's awsemf exporter publishes it (deploy/otel-collector/config.yaml)."
  type        = string
  default     = "stripe_worker.processing.duration"

  validation {
    condition     = length(var.processing_time_metric_name) > 0
    error_message = "processing_time_metric_name must not be empty."
  }
}

variable "ingress_requests_metric_name" {
  description = "Name of the ingress's request counter in app_metric_namespace (dimensions `status` and `reason`), as the collector's awsemf exporter publishes it (deploy/otel-collector/config.yaml)."
  type        = string
  default     = "stripe_worker.ingress.requests"

  validation {
    condition     = length(var.ingress_requests_metric_name) > 0
    error_message = "ingress_requests_metric_name must not be empty."
  }
}

variable "ingress_5xx_threshold" {
  description = "Alarm when the ingress answers this many webhooks or more with 503 (the bus refused them) in 5 minutes."
  type        = number
  default     = 1

  validation {
    condition     = var.ingress_5xx_threshold >= 1
    error_message = "ingress_5xx_threshold must be >= 1."
  }
}

variable "signature_rejections_threshold" {
  description = "Alarm when the ingress refuses more than this many webhooks for their signature in 5 minutes (a secret out of step with Stripe, or probing)."
  type        = number
  default     = 20

  validation {
    condition     = var.signature_rejections_threshold >= 0
    error_message = "signature_rejections_threshold must be >= 0."
  }
}

variable "eks_oidc_provider_arn" {
  description = "ARN of the EKS cluster's IAM OIDC provider. Set it (with eks_oidc_provider_url) to create IRSA roles for the worker and ingress service accounts; null skips them."
  type        = string
  default     = null

  validation {
    condition     = var.eks_oidc_provider_arn == null || can(regex("^arn:[a-z-]+:iam::[0-9]{12}:oidc-provider/.+$", var.eks_oidc_provider_arn))
    error_message = "eks_oidc_provider_arn must be an IAM OIDC provider ARN or null."
  }
}

variable "eks_oidc_provider_url" {
  description = "Issuer URL of the EKS cluster's OIDC provider (https://oidc.eks.<region>.amazonaws.com/id/<id>, with or without https://)."
  type        = string
  default     = null

  validation {
    condition     = var.eks_oidc_provider_url == null || can(regex("^(https://)?[A-Za-z0-9.-]+(/[A-Za-z0-9._-]+)*$", var.eks_oidc_provider_url))
    error_message = "eks_oidc_provider_url must be the issuer URL of the cluster's OIDC provider or null."
  }
}

variable "k8s_namespace" {
  description = "Kubernetes namespace of the worker and ingress (must match the Kustomize overlay's namespace)."
  type        = string
  default     = "stripe-worker"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.k8s_namespace))
    error_message = "k8s_namespace must be a valid Kubernetes namespace name."
  }
}

variable "k8s_worker_service_account" {
  description = "Kubernetes service account of the worker Deployments (trusted by the worker IRSA role)."
  type        = string
  default     = "stripe-worker"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", var.k8s_worker_service_account))
    error_message = "k8s_worker_service_account must be a valid Kubernetes name."
  }
}

variable "k8s_ingress_service_account" {
  description = "Kubernetes service account of the webhook ingress Deployment (trusted by the ingress IRSA role)."
  type        = string
  default     = "stripe-worker-ingress"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", var.k8s_ingress_service_account))
    error_message = "k8s_ingress_service_account must be a valid Kubernetes name."
  }
}

variable "k8s_api_service_account" {
  description = "Kubernetes service account of the read API Deployment (`serve-api`, trusted by the api IRSA role)."
  type        = string
  default     = "stripe-worker-api"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", var.k8s_api_service_account))
    error_message = "k8s_api_service_account must be a valid Kubernetes name."
  }
}

variable "create_ecs_roles" {
  description = "Create the ECS task roles (worker, ingress, api) and the task execution role used by deploy/ecs/*.json."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every resource that takes tags."
  type        = map(string)
  default     = {}
}

variable "keda_operator_role_arn" {
  description = "IAM role of the KEDA operator (its IRSA role). Set it to create <prefix>-keda-scaler, a role the operator assumes (TriggerAuthentication podIdentity.roleArn) that may only read the domain queues' attributes; null skips it (HPA component, or ECS)."
  type        = string
  default     = null

  validation {
    condition     = var.keda_operator_role_arn == null || can(regex("^arn:[a-z-]+:iam::[0-9]{12}:role/.+$", var.keda_operator_role_arn))
    error_message = "keda_operator_role_arn must be an IAM role ARN or null."
  }
}
