//! The worker's sign of life: a browser whose person only reads notifications never calls
//! the server from the page, so its worker tells the server that pushes reach it
//! (`POST /api/alive`, at most once a day), and the browser is not pruned as stale.

use end2end::eventually;

use super::{Room, Stack, ONE_AT_A_TIME};

/// How many `/api/alive` calls the server answered, by status, as `/metrics` counts them.
async fn alive_reports(stack: &Stack) -> Vec<(String, u64)> {
    let metrics = reqwest::get(format!("{}/metrics", stack.server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .filter(|line| line.starts_with("pushchat_http_requests_total{"))
        .filter(|line| line.contains("route=\"/api/alive\""))
        .map(|line| {
            let (labels, count) = line.rsplit_once(' ').expect("a sample and its value");
            let status = labels
                .split("status=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_default();
            (status.to_owned(), count.parse().expect("a count"))
        })
        .collect()
}

#[tokio::test]
async fn test_each_worker_reports_that_pushes_reach_its_browser() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Room {
        stack, alice, bob, ..
    } = &Room::open("Alice").await;
    // Alice's join reached Bob's worker; a line of Bob's reaches Alice's.
    bob.say("is this thing on?").await;
    alice.wait_for_lines(&[("Bob", "is this thing on?")]).await;

    let reports = eventually("both workers to report a sign of life", || async {
        let reports = alive_reports(stack).await;
        (reports.iter().map(|(_, count)| count).sum::<u64>() >= 2).then_some(reports)
    })
    .await;
    assert_eq!(
        reports,
        vec![("204".to_owned(), 2)],
        "one report each, taken"
    );
}
