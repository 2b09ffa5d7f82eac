namespace DeepSeekSharp.Tests;

public class SmokeTests
{
    [Fact]
    public void ExceptionCarriesMessage() => Assert.Equal("x", new DeepSeekSharpException("x").Message);
}
