//! The demo page in a real headless Chromium (Debian's `chromium` and `chromium-driver`, which
//! `scripts/setup.sh --tests` installs), served by `recsys serve` on MovieLens-100k: search by
//! keyboard, open an item, view three, and the recommendation grid shows exactly what
//! `POST /recs/retrieve` answers for that session; with a user id, a view is posted as an event
//! and shows in the stored history; a shop title with markup stays text; no script error; no
//! horizontal scroll at 375 px. Screenshots go to `<target>/test-artifacts/web_page/`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use support::KillOnDrop;

/// Records uncaught errors, rejected promises and `console.error` before any page script runs.
const ERROR_COLLECTOR: &str = "window.__pageErrors = [];
window.addEventListener('error', (e) => window.__pageErrors.push('error: ' + e.message));
window.addEventListener('unhandledrejection', (e) => window.__pageErrors.push('rejection: ' + e.reason));
const consoleError = console.error;
console.error = (...args) => { window.__pageErrors.push('console: ' + args.join(' ')); consoleError(...args); };";

/// Chromedriver's command for the DevTools protocol (not in the WebDriver standard).
#[derive(Debug)]
struct DevToolsCommand {
    cmd: &'static str,
    params: Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for DevToolsCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({"cmd": self.cmd, "params": self.params}).to_string();
        (http::Method::POST, Some(body))
    }
}

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-artifacts/web_page");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn save_screenshot(browser: &Client, name: &str) {
    let path = artifacts_dir().join(name);
    std::fs::write(&path, browser.screenshot().await.unwrap()).unwrap();
    println!("screenshot: {}", path.display());
}

/// A data dir with a quickly trained MovieLens-100k model and its index: titles are what the
/// page is about, not the model.
fn movielens_deployment(recsys: &Path) -> tempfile::TempDir {
    let data_dir = support::data_dir_with_movielens();
    let quick = ["--max-epochs", "1", "--embedding-dim", "32"];
    support::run(
        recsys,
        data_dir.path(),
        &[],
        &[&["train"][..], &quick].concat(),
    );
    support::run(recsys, data_dir.path(), &[], &["index"]);
    data_dir
}

async fn text(browser: &Client, id: &str) -> String {
    browser
        .find(Locator::Id(id))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Presses Tab until the focused element matches `selector`; how many presses it took.
async fn tab_to(browser: &Client, selector: &str) -> usize {
    for presses in 1..=30 {
        let active = browser.active_element().await.unwrap();
        active
            .send_keys(&char::from(Key::Tab).to_string())
            .await
            .unwrap();
        let reached = browser
            .execute(
                "return document.activeElement.matches(arguments[0]);",
                vec![json!(selector)],
            )
            .await
            .unwrap();
        if reached == json!(true) {
            return presses;
        }
    }
    panic!("Tab never reached {selector}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_searches_opens_items_and_recommends_for_the_session() {
    if Command::new("chromedriver")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: the browser test (no chromedriver: scripts/setup.sh --tests installs chromium-driver)");
        return;
    }
    let recsys = PathBuf::from(env!("CARGO_BIN_EXE_recsys"));
    let data_dir = tokio::task::block_in_place(|| movielens_deployment(&recsys));
    let (api, address) = support::serve(&recsys, data_dir.path(), |_| {});
    let _api = KillOnDrop(api);
    let url = format!("http://{address}");
    let http = reqwest::Client::new();
    // Markup in a shop's title must reach the page as text.
    let hostile = "<img src=x onerror=alert(1)> Hostile Title";
    http.post(format!("{url}/items"))
        .json(&json!({"item_id": "hostile-1", "title": hostile}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();

    let driver_port = testkit::free_port();
    let _driver = KillOnDrop(
        Command::new("chromedriver")
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let capabilities = json!({"goog:chromeOptions": {"args": [
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1000"
    ]}});
    let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
    builder.capabilities(capabilities.as_object().unwrap().clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    let browser = loop {
        match builder
            .connect(&format!("http://127.0.0.1:{driver_port}"))
            .await
        {
            Ok(browser) => break browser,
            Err(error) => {
                assert!(Instant::now() < deadline, "chromedriver: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    browser
        .issue_cmd(DevToolsCommand {
            cmd: "Page.addScriptToEvaluateOnNewDocument",
            params: json!({"source": ERROR_COLLECTOR}),
        })
        .await
        .unwrap();
    browser.goto(&format!("{url}/")).await.unwrap();
    eventually("the first recommendations", || async {
        text(&browser, "recs-info")
            .await
            .starts_with("source: popular")
    })
    .await;

    // Search by keyboard: Tab reaches the box, Enter submits.
    tab_to(&browser, "#search-input").await;
    let enter = char::from(Key::Enter).to_string();
    let search = browser.active_element().await.unwrap();
    search
        .send_keys(&format!("star wars{enter}"))
        .await
        .unwrap();
    eventually("search results", || async {
        !grid_or_empty(&browser, "#search-results li")
            .await
            .is_empty()
    })
    .await;
    let results = grid_or_empty(&browser, "#search-results li").await;
    assert_eq!(results[0], "50", "Star Wars first: {results:?}");
    tab_to(&browser, "#search-results li[data-item-id='50'] button").await;
    browser
        .active_element()
        .await
        .unwrap()
        .send_keys(&enter)
        .await
        .unwrap();
    eventually("the item page", || async {
        text(&browser, "item-title").await == "Star Wars"
    })
    .await;
    assert!(text(&browser, "item-details").await.contains("1977"));

    // Two more views, through the similar items of the page.
    let mut viewed = vec!["50".to_owned()];
    for _ in 0..2 {
        eventually("similar items", || async {
            !grid_or_empty(&browser, "#similar-items li")
                .await
                .is_empty()
        })
        .await;
        let similar = grid_or_empty(&browser, "#similar-items li").await;
        let next = similar
            .iter()
            .find(|id| !viewed.contains(id))
            .expect("an item not viewed yet")
            .clone();
        open_item(&browser, "similar-items", &next).await;
        let hash = format!("#/item/{next}");
        eventually("the next item page", || async {
            browser.current_url().await.unwrap().fragment() == Some(&hash[1..])
        })
        .await;
        viewed.push(next);
    }
    let session: Vec<String> = serde_json::from_value(
        browser
            .execute(
                "return JSON.parse(localStorage.getItem('recsys.recent'));",
                vec![],
            )
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        session, viewed,
        "recently viewed, oldest first, is the session"
    );

    let expected: Value = http
        .post(format!("{url}/recs/retrieve?count=12"))
        .json(&json!({"user_ids_raw": [], "item_seq_raw": [session], "candidate_items_raw": []}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(expected["metadata"]["source"], "personalized", "{expected}");
    let expected_ids: Vec<String> = expected["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rec| rec["item_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(expected_ids.iter().all(|id| !viewed.contains(id)));
    eventually("the grid for the session", || async {
        grid_or_empty(&browser, "#recs-grid li").await == expected_ids
    })
    .await;
    let info = text(&browser, "recs-info").await;
    assert!(info.starts_with("source: personalized"), "{info}");
    assert!(info.contains("model: "), "{info}");
    save_screenshot(&browser, "desktop.png").await;

    // With a user id, a view is posted as an event and shows in the stored history.
    let user = browser.find(Locator::Id("user-input")).await.unwrap();
    user.send_keys(&format!("page-user{enter}")).await.unwrap();
    eventually("the empty history", || async {
        text(&browser, "user-status")
            .await
            .contains("no stored history")
    })
    .await;
    let picked = expected_ids[0].clone();
    open_item(&browser, "recs-grid", &picked).await;
    eventually("the view in the stored history", || async {
        grid_or_empty(&browser, "#user-history li").await == [picked.clone()]
    })
    .await;
    let history: Value = http
        .get(format!("{url}/users/page-user/history"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(history["recent_items"], json!([picked]));

    // The hostile title is found and shown as the text it is.
    let search = browser.find(Locator::Id("search-input")).await.unwrap();
    search.clear().await.unwrap();
    search
        .send_keys(&format!("hostile title{enter}"))
        .await
        .unwrap();
    eventually("the hostile item", || async {
        grid_or_empty(&browser, "#search-results li").await == ["hostile-1"]
    })
    .await;
    let shown = browser
        .find(Locator::Css("#search-results li button span"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(shown, hostile);
    let images = browser.find_all(Locator::Css("main img")).await.unwrap();
    assert!(images.is_empty(), "markup from a title became an element");

    // A phone's width: nothing wider than the window.
    browser.set_window_size(375, 800).await.unwrap();
    let widths = browser
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await
        .unwrap();
    let (scroll_width, window_width) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
    assert!(window_width <= 400, "the window did not shrink: {widths}");
    assert!(
        scroll_width <= window_width,
        "horizontal scroll at 375 px: {widths}"
    );
    save_screenshot(&browser, "phone.png").await;

    let errors = browser
        .execute("return window.__pageErrors;", vec![])
        .await
        .unwrap();
    assert_eq!(errors, json!([]), "the page raised script errors");
    browser.close().await.unwrap();
}

/// Clicks the item `item_id` of the list `list_id`.
async fn open_item(browser: &Client, list_id: &str, item_id: &str) {
    let selector = format!("#{list_id} li[data-item-id='{item_id}'] button");
    let button = browser.find(Locator::Css(&selector)).await.unwrap();
    button.click().await.unwrap();
}

/// The `data-item-id`s of the elements matching `selector`.
async fn grid_or_empty(browser: &Client, selector: &str) -> Vec<String> {
    let ids = browser
        .execute(
            "return [...document.querySelectorAll(arguments[0])].map((e) => e.dataset.itemId);",
            vec![json!(selector)],
        )
        .await
        .unwrap();
    serde_json::from_value(ids).unwrap()
}
