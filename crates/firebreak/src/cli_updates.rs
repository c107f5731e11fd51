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
    /// The subscriber's kind and name, as the API takes them.
    fn wire(&self) -> (v1::SubscriberKind, String) {
        match (&self.person, &self.channel) {
            (Some(p), _) => (v1::SubscriberKind::Person, p.clone()),
            (None, Some(c)) => (v1::SubscriberKind::Channel, c.clone()),
            (None, None) => (v1::SubscriberKind::Unspecified, String::new()),
        }
    }

    /// As people write it: `person:NAME`, `channel:NAME`.
    fn subscriber(&self) -> String {
        let (kind, name) = self.wire();
        format!("{}:{name}", kind.name())
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
            let (subscriber, (kind, name)) = (who.subscriber(), who.wire());
            let r = client
                .subscribe(v1::SubscribeRequest {
                    incident_id: id.clone(),
                    subscriber_kind: kind as i32,
                    subscriber_name: name,
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
            let (subscriber, (kind, name)) = (who.subscriber(), who.wire());
            client
                .unsubscribe(v1::UnsubscribeRequest {
                    incident_id: id.clone(),
                    subscriber_kind: kind as i32,
                    subscriber_name: name,
                })
                .await?;
            out.subscription("unsubscribed", &id, &subscriber);
        }
        IncidentCmd::Subscribers { id } => {
            let list = every_page!(page_token => client
                .list_subscribers(v1::ListSubscribersRequest {
                    incident_id: id.clone(),
                    page_size: 0,
                    page_token,
                })
                .await?
                .into_inner(), subscriptions);
            out.subscribers(&list);
        }
        _ => {}
    }
    Ok(())
}
