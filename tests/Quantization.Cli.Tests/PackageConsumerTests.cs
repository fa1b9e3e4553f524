using System.IO.Compression;
using System.Runtime.InteropServices;
using System.Xml.Linq;

namespace Quantization.Cli.Tests;

/// <summary>
/// The library packages, packed locally, hold what a consumer needs (README with absolute links, LICENSE, XML docs, symbols) and restore into a
/// new console project that builds and runs each package README's example, as an app would.
/// </summary>
[Collection(ToolInstallTests.PackingCollection)]
public sealed class PackageConsumerTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("ptq-consumer-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void PackedLibraries_HoldReadmeLicenseDocsAndSymbols_AndRunTheirReadmeExamplesInAConsumer()
    {
        string sources = Path.GetDirectoryName(Path.GetDirectoryName(Path.GetFullPath(Ptq.Metadata("CliProject").Replace('\\', Path.DirectorySeparatorChar))))!;
        string packages = Path.Combine(_directory, "packages"), app = Path.Combine(_directory, "app");
        string version = $"0.0.0-test.{DateTime.UtcNow:yyyyMMddHHmmss}";
        foreach ((string project, string id) in new[] { ("Quantization", "PtqSharp"), ("Quantization.Onnx", "PtqSharp.Onnx") })
        {
            (int code, string output, string error) = Ptq.RunProgram("dotnet", ["pack", Path.Combine(sources, project), "-c", "Release", "-o", packages, $"-p:Version={version}", "--nologo"]);
            Assert.True(code == 0, output + error);
            using ZipArchive package = ZipFile.OpenRead(Path.Combine(packages, $"{id}.{version}.nupkg"));
            string[] entries = [.. package.Entries.Select(e => e.FullName)];
            Assert.Subset(entries.ToHashSet(), new HashSet<string> { "README.md", "LICENSE", $"lib/net10.0/{project}.dll", $"lib/net10.0/{project}.xml" });
            Assert.True(File.Exists(Path.Combine(packages, $"{id}.{version}.snupkg")), $"{id} has no symbol package");
            using (StreamReader readme = new(package.GetEntry("README.md")!.Open()))
            {
                // Links are absolute on nuget.org: the build wrote the repository address into them.
                string text = readme.ReadToEnd();
                Assert.DoesNotContain("{RepositoryUrl}", text, StringComparison.Ordinal);
                Assert.Contains("https://", text, StringComparison.Ordinal);
            }
        }

        // A new console app, as `dotnet new console` makes it, on the local packages and ONNX Runtime's CPU natives. Third-party
        // packages come from this machine's NuGet cache (read-only); ours go into a private cache, so nothing stale is read.
        Directory.CreateDirectory(app);
        string onnxRuntime = XDocument.Load(Path.Combine(sources, "..", "Directory.Packages.props")).Descendants("PackageVersion")
            .Single(p => (string?)p.Attribute("Include") == "Microsoft.ML.OnnxRuntime").Attribute("Version")!.Value;
        File.WriteAllText(Path.Combine(app, "App.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <ImplicitUsings>enable</ImplicitUsings>
                <Nullable>enable</Nullable>
                <RuntimeIdentifier>{RuntimeInformation.RuntimeIdentifier}</RuntimeIdentifier>
                <SelfContained>false</SelfContained>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="PtqSharp.Onnx" Version="{version}" />
                <PackageReference Include="Microsoft.ML.OnnxRuntime" Version="{onnxRuntime}" />
              </ItemGroup>
            </Project>
            """);
        File.WriteAllText(Path.Combine(app, "NuGet.config"), $"""
            <configuration>
              <packageSources>
                <clear />
                <add key="local" value="{packages}" />
                <add key="nuget.org" value="https://api.nuget.org/v3/index.json" />
              </packageSources>
              <packageSourceMapping>
                <packageSource key="local"><package pattern="PtqSharp*" /></packageSource>
                <packageSource key="nuget.org"><package pattern="*" /></packageSource>
              </packageSourceMapping>
              <fallbackPackageFolders>
                <add key="machine" value="{Ptq.Metadata("NuGetPackageRoot")}" />
              </fallbackPackageFolders>
            </configuration>
            """);
        Dictionary<string, string> environment = new() { ["NUGET_PACKAGES"] = Path.Combine(_directory, "nuget-cache") };

        File.WriteAllText(Path.Combine(app, "Program.cs"), ReadmeExample(Path.Combine(sources, "Quantization", "README.md")));
        (int exit, string stdout, string stderr) = Ptq.RunProgram("dotnet", ["run", "-c", "Release"], environment, app);
        Assert.True(exit == 0, stdout + stderr);
        Assert.Contains("fc1.weight: 256 scales, SQNR", stdout, StringComparison.Ordinal);

        Ptq.WriteMatMulModel(Path.Combine(app, "model.onnx"));
        File.WriteAllText(Path.Combine(app, "Program.cs"), ReadmeExample(Path.Combine(sources, "Quantization.Onnx", "README.md")));
        (exit, stdout, stderr) = Ptq.RunProgram("dotnet", ["run", "-c", "Release"], environment, app);
        Assert.True(exit == 0, stdout + stderr);
        Assert.Contains("w: SQNR", stdout, StringComparison.Ordinal);
        Assert.Contains("ONNX Runtime loaded it: inputs x", stdout, StringComparison.Ordinal);
        Assert.True(File.Exists(Path.Combine(app, "model.int8.onnx")));
    }

    /// <summary>The first C# code block of a package README, verbatim.</summary>
    private static string ReadmeExample(string readme)
    {
        string text = File.ReadAllText(readme);
        const string Fence = "```csharp";
        int start = text.IndexOf(Fence, StringComparison.Ordinal);
        Assert.True(start >= 0, $"{readme} has no C# example");
        start = text.IndexOf('\n', start) + 1;
        return text[start..text.IndexOf("```", start, StringComparison.Ordinal)];
    }
}
