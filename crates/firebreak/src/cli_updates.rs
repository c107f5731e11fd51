//! `firebreak incident subscribe|unsubscribe|subscribers`: who receives an incident's status
//! updates (notification's `Subscribe`, `Unsubscribe`, `ListSubscribers`). `incident update`
//! itself is triage's, in `cli.rs`.

use firebreak_proto::v1;
use firebreak_proto::v1::notification_service_client::NotificationServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::cli::IncidentCmd;
use crate::output::Out;

/// Exactly one of a person or a channel.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct SubscriberArgs {
    /// A user of the directory, reached through their first contact method a channel
    /// reaches.
    #[arg(long)]
    person: Option<String>,
    /// A configured channel.
    #[arg(long)]
    channel: Option<String>,
}

impl SubscriberArgs {
    /// As the API writes it: `person:NAME`, `channel:NAME`.
    fn subscriber(&self) -> String {
        match (&self.person, &self.channel) {
            (Some(p), _) => format!("person:{p}"),
            (None, Some(c)) => format!("channel:{c}"),
            (None, None) => String::new(),
        }
    }
}

/// Runs a subscription command against notification.
pub(crate) async fn subscriptions(
    cmd: IncidentCmd,
    channel: InterceptedService<Channel, firebreak_proto::access::Bearer>,
    out: &Out,
) -> Result<(), tonic::Status> {
    let mut client = NotificationServiceClient::new(channel);
    match cmd {
        IncidentCmd::Subscribe { id, who } => {
            let subscriber = who.subscriber();
            let r = client
                .subscribe(v1::SubscribeRequest {
                    incident_id: id.clone(),
                    subscriber: subscriber.clone(),
                })
                .await?
                .into_inner();
            let action = if r.created {
                "subscribed"
            } else {
                "already subscribed"
            };
            out.subscription(action, &id, &subscriber);
        }
        IncidentCmd::Unsubscribe { id, who } => {
            let subscriber = who.subscriber();
            client
                .unsubscribe(v1::UnsubscribeRequest {
                    incident_id: id.clone(),
                    subscriber: subscriber.clone(),
                })
                .await?;
            out.subscription("unsubscribed", &id, &subscriber);
        }
        IncidentCmd::Subscribers { id } => {
            let r = client
                .list_subscribers(v1::ListSubscribersRequest { incident_id: id })
                .await?
                .into_inner();
            out.subscribers(&r);
        }
        _ => {}
    }
    Ok(())
}
