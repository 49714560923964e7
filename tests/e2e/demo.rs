//! The demo app's rules and functions (`rules/`, `functions/` at the repository
//! root) over HTTP on both backends: browsing, searching and purchasing in the
//! pet store.

use serde_json::json;

use crate::harness::{Backend, Options, Server};
use crate::on_both_backends;

fn repo_file(path: &str) -> String {
    let root = crate::harness::repository_root();
    std::fs::read_to_string(root.join(path)).unwrap()
}

async fn pet_store(backend: Backend) -> Server {
    let options = Options::default()
        .file("rules/petstore.rules", &repo_file("rules/petstore.rules"))
        .file("functions/petstore.js", &repo_file("functions/petstore.js"));
    let server = Server::start_with(backend, options).await;
    let writes = json!({"writes": [
        {"op": "set", "path": "products/cat-food", "data": {"name": "Cat food", "price": 5, "stock": 3}},
        {"op": "set", "path": "products/dog-bed", "data": {"name": "Dog bed", "price": 40, "stock": 1}},
        {"op": "set", "path": "products/catnip", "data": {"name": "Catnip", "price": 2, "stock": 0}}
    ]});
    assert_eq!(server.admin("POST", "/v1/batch", Some(writes)).await.0, 200);
    server
}

async fn shopper(server: &Server, email: &str) -> (String, String) {
    let (_, session) =
        server.call("POST", "/v1/auth/signup", None, Some(json!({"email": email, "password": "correct horse"}))).await;
    (session["user"]["id"].as_str().unwrap().to_owned(), session["access_token"].as_str().unwrap().to_owned())
}

on_both_backends!(browse_search_and_purchase, the_last_item_goes_to_one_buyer, ad_clicks_redirect_and_charge_once);

async fn ad_clicks_redirect_and_charge_once(backend: Backend) {
    let options = Options::default().file("functions/adclicks.js", &repo_file("functions/adclicks.js"));
    let server = Server::start_with(backend, options).await;
    let ad = json!({"target": "https://example.com/shoes", "budget": 100, "costPerClick": 3, "clicks": 0});
    server.admin("PUT", "/v1/docs/ads/a1", Some(ad)).await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for _ in 0..5 {
        let response = client.get(server.url("/fn/click/a1")).send().await.unwrap();
        assert_eq!(response.status(), 302);
        assert_eq!(response.headers()["location"], "https://example.com/shoes");
    }
    assert_eq!(client.get(server.url("/fn/click/nope")).send().await.unwrap().status(), 404);
    let ad = crate::harness::eventually(std::time::Duration::from_secs(10), "five clicks charged", || async {
        let ad = server.admin("GET", "/v1/docs/ads/a1", None).await.1;
        (ad["data"]["clicks"] == 5).then_some(ad)
    })
    .await;
    assert_eq!((ad["data"]["clicks"].as_i64(), ad["data"]["budget"].as_i64()), (Some(5), Some(85)), "{ad}");
    let (_, charges) = server.admin("POST", "/v1/query", Some(json!({"collection": "charges", "count": true}))).await;
    assert_eq!(charges["count"], 5);
}

async fn browse_search_and_purchase(backend: Backend) {
    let server = pet_store(backend).await;
    let (status, page) = server.call("GET", "/v1/docs/products", None, None).await;
    assert_eq!((status, page["documents"].as_array().unwrap().len()), (200, 3), "anyone browses the catalogue");
    let (status, found) = server.call("GET", "/fn/search?q=cat", None, None).await;
    assert_eq!(status, 200, "{found}");
    let names: Vec<&str> = found["hits"].as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Cat food", "Catnip"]);

    let (uid, token) = shopper(&server, "ann@example.com").await;
    let order = json!({"productId": "cat-food", "quantity": 2});
    assert_eq!(server.call("POST", "/fn/purchase", None, Some(order.clone())).await.0, 401);
    let (status, bought) = server.call("POST", "/fn/purchase", Some(&token), Some(order)).await;
    assert_eq!(status, 201, "{bought}");
    assert_eq!(bought["remaining"], 1);
    let order_path = format!("/v1/docs/orders/{}", bought["orderId"].as_str().unwrap());
    let (status, stored) = server.call("GET", &order_path, Some(&token), None).await;
    assert_eq!((status, stored["data"]["owner"].as_str()), (200, Some(uid.as_str())), "the buyer reads their order");
    assert!(stored["data"]["createdAt"]["$timestamp"].as_str().unwrap().ends_with('Z'), "a typed timestamp");
    let (_, other) = shopper(&server, "bob@example.com").await;
    assert_eq!(server.call("GET", &order_path, Some(&other), None).await.0, 403, "others cannot");
    let (_, product) = server.call("GET", "/v1/docs/products/cat-food", None, None).await;
    assert_eq!(product["data"]["stock"], 1);
    let confirmation_path = format!("/v1/docs/confirmations/{}", bought["orderId"].as_str().unwrap());
    let confirmation = crate::harness::eventually(std::time::Duration::from_secs(10), "the confirmation", || async {
        let (status, body) = server.admin("GET", &confirmation_path, None).await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(confirmation["data"]["owner"].as_str(), Some(uid.as_str()), "the onCreate trigger confirmed the order");

    let (status, body) =
        server.call("POST", "/fn/purchase", Some(&token), Some(json!({"productId": "catnip", "quantity": 1}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (412, Some("failed-precondition")), "out of stock");
    let (status, _) =
        server.call("POST", "/fn/purchase", Some(&token), Some(json!({"productId": "nope", "quantity": 1}))).await;
    assert_eq!(status, 404);
    let (status, _) =
        server.call("POST", "/fn/purchase", Some(&token), Some(json!({"productId": "cat-food", "quantity": 11}))).await;
    assert_eq!(status, 400, "the body schema is checked first");
    let forged = json!({"owner": "someone-else", "productId": "cat-food", "quantity": 1});
    assert_eq!(
        server.call("PUT", "/v1/docs/orders/forged", Some(&token), Some(forged)).await.0,
        403,
        "the rules refuse forged orders"
    );
}

async fn the_last_item_goes_to_one_buyer(backend: Backend) {
    let server = std::sync::Arc::new(pet_store(backend).await);
    let mut buyers = Vec::new();
    for i in 0..4 {
        let (_, token) = shopper(&server, &format!("buyer{i}@example.com")).await;
        let server = server.clone();
        buyers.push(tokio::spawn(async move {
            server
                .call("POST", "/fn/purchase", Some(&token), Some(json!({"productId": "dog-bed", "quantity": 1})))
                .await
                .0
        }));
    }
    let mut statuses = Vec::new();
    for buyer in buyers {
        statuses.push(buyer.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 201 || *s == 412), "{statuses:?}");
    let (_, product) = server.call("GET", "/v1/docs/products/dog-bed", None, None).await;
    assert_eq!(product["data"]["stock"], 0);
    let (_, orders) = server.admin("POST", "/v1/query", Some(json!({"collection": "orders", "count": true}))).await;
    assert_eq!(orders["count"], 1);
}
