using System.Reflection;

namespace Quantization.Cli.Tests;

/// <summary>ptq installs from a locally packed package with <c>dotnet tool install</c> and does its job.</summary>
public sealed class ToolInstallTests : IDisposable
{
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
        (int code, string output, string error) = Ptq.RunProgram("dotnet", ["pack", project, "-c", "Release", "-o", packages, $"-p:Version={version}", "--nologo"]);
        Assert.True(code == 0, output + error);
        (code, output, error) = Ptq.RunProgram("dotnet", ["tool", "install", "Quantization.Cli", "--tool-path", tools, "--add-source", packages, "--version", version], environment);
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
