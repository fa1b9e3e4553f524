using System.Reflection;
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
        string project = typeof(ToolInstallTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "CliProject").Value!;
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
}
