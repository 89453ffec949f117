<%@ page import="java.sql.*" contentType="text/plain; charset=UTF-8" %><%
String app = application.getServerInfo();
out.println("app:    " + request.getServletContext().getRealPath("/"));
out.println("server: " + app);
out.println("java:   " + System.getProperty("java.version") + " (" + System.getProperty("java.vendor") + ")");
String url = System.getenv("DB_URL");
try (Connection c = DriverManager.getConnection(url, "shop", "shop")) {
    try (PreparedStatement p = c.prepareStatement("INSERT INTO visits (app) VALUES (?)")) {
        p.setString(1, app.length() > 32 ? app.substring(0, 32) : app);
        p.executeUpdate();
    }
    try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT COUNT(*), VERSION() FROM visits")) {
        r.next();
        out.println("db:     " + url + " -> MariaDB " + r.getString(2) + ", " + r.getInt(1) + " visits so far");
    }
} catch (Exception e) {
    out.println("db:     " + url + " -> " + e);
}
%>
