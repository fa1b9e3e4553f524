using System.IO.Compression;
using System.Runtime.InteropServices;

namespace Quantization.Cli.Tests;

/// <summary>ptq installs from a locally packed package with <c>dotnet tool install</c> and does its job.</summary>
[Collection(PackingCollection)]
public sealed class ToolInstallTests : IDisposable
{
    /// <summary>The tests that pack the source projects, one at a time: two packs at once would build the same files.</summary>
    public const string PackingCollection = "Packs the source projects";

    private readonly string _directory = Directory.CreateTempSubdirectory("ptq-tool-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void PackedTool_Installs_AndQuantizesAnOnnxModelAndACheckpoint()
    {
        string project = Ptq.Metadata("CliProject");
        string packages = Path.Combine(_directory, "packages"), tools = Path.Combine(_directory, "tools");
        string version = $"0.0.0-test.{DateTime.UtcNow:yyyyMMddHHmmss}";

        // A private NuGet cache, so the test neither reads a stale package nor leaves one behind.
        Dictionary<string, string> environment = new() { ["NUGET_PACKAGES"] = Path.Combine(_directory, "nuget-cache") };
        // The tool package that names the per-platform packages, and this platform's (a release packs every platform's).
        (int code, string output, string error) = Ptq.RunProgram("dotnet", ["pack", project, "-c", "Release", "-o", packages, $"-p:Version={version}", $"-p:ToolPackageRuntimeIdentifiers={RuntimeInformation.RuntimeIdentifier}", "--nologo"]);
        Assert.True(code == 0, output + error);
        Assert.True(File.Exists(Path.Combine(packages, $"PtqSharp.Cli.{RuntimeInformation.RuntimeIdentifier}.{version}.nupkg")), string.Join(", ", Directory.GetFiles(packages)));
        (code, output, error) = Ptq.RunProgram("dotnet", ["tool", "install", "PtqSharp.Cli", "--tool-path", tools, "--add-source", packages, "--version", version], environment);
        Assert.True(code == 0, output + error);
        string ptq = Path.Combine(tools, OperatingSystem.IsWindows() ? "ptq.exe" : "ptq");

        string model = Path.Combine(_directory, "matmul.onnx"), checkpoint = Path.Combine(_directory, "model.safetensors");
        Ptq.WriteMatMulModel(model);
        Ptq.WriteCheckpoint(checkpoint);
        (code, output, error) = Ptq.RunProgram(ptq, ["quantize", model, "-o", Path.Combine(_directory, "matmul.int8.onnx")]);
        Assert.True(code == 0, error);
        (code, output, error) = Ptq.RunProgram(ptq, ["quantize", checkpoint, "-o", Path.Combine(_directory, "int8")]);
        Assert.True(code == 0, error);
        Assert.True(File.Exists(Path.Combine(_directory, "int8", "model.safetensors")));
        Assert.True(File.Exists(Path.Combine(_directory, "int8", "config.json")));
    }

    [Fact]
    public void PerPlatformToolPackages_CarryExactlyTheirPlatformsOnnxRuntimeNatives()
    {
        // The platforms where ONNX Runtime's build props once added Windows DLLs by processor (arm64): a Linux one and a
        // Windows one, whose DLLs share their names with win-x64's and differ in size.
        string[] platforms = ["linux-arm64", "win-arm64"];
        string project = Ptq.Metadata("CliProject"), packages = Path.Combine(_directory, "packages");
        string version = $"0.0.0-test.{DateTime.UtcNow:yyyyMMddHHmmss}";
        (int code, string output, string error) = Ptq.RunProgram("dotnet", ["pack", project, "-c", "Release", "-o", packages, $"-p:Version={version}", $"-p:ToolPackageRuntimeIdentifiers=\"{string.Join(';', platforms)}\"", "--nologo"]);
        Assert.True(code == 0, output + error);

        foreach (string platform in platforms)
        {
            // ONNX Runtime's natives for the platform, by name and size; import libraries (.lib) come along with the DLLs.
            string[] expected = [.. new DirectoryInfo(Path.Combine(Ptq.Metadata("OnnxRuntimePackage"), "runtimes", platform, "native")).GetFiles()
                .Select(f => $"{f.Name} {f.Length}").Order(StringComparer.Ordinal)];
            using ZipArchive package = ZipFile.OpenRead(Path.Combine(packages, $"PtqSharp.Cli.{platform}.{version}.nupkg"));
            string[] natives = [.. package.Entries
                .Where(e => e.Name.Contains("onnxruntime", StringComparison.OrdinalIgnoreCase) && e.Name != "Microsoft.ML.OnnxRuntime.dll")
                .Select(e => $"{e.Name} {e.Length}").Order(StringComparer.Ordinal)];
            Assert.Equal(expected, natives);
        }
    }
}
